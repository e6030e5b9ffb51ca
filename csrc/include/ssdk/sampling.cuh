// Sampling primitives shared by the verification kernels: Philox4x32-10, order-preserving float keys,
// the per-row sampling distribution (temperature, top-k/top-p keep threshold, Saguaro weights), block
// reductions, and the radix select behind top-k / top-p / Saguaro thresholds.
// The bit-level definitions match ssdk/ref/verify.py (the reference) exactly.
#pragma once
#include <cfloat>
#include <climits>
#include <type_traits>

#include "ssdk/common.cuh"

namespace ssdk::sampling {

constexpr int kThreads = 256;
constexpr float kLog2e = 1.4426950408889634f;
constexpr uint32_t kTagAccept = 0, kTagSample = 1;

// ---- Philox4x32-10: key = seed, counter = (draw >> 2, row + (tag << 28), offset_lo, offset_hi)
__device__ __forceinline__ uint4 philox4x32(uint4 c, uint64_t seed) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int i = 0; i < 10; ++i) {
    const uint32_t hi0 = __umulhi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
    c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// Uniform in (0, 1) from 23 random bits: exact in fp32, never 0 or 1.
__device__ __forceinline__ float to_unit(uint32_t w) {
  return (static_cast<float>(w >> 9) + 0.5f) * 1.1920928955078125e-7f;
}

// The four draws 4q .. 4q+3 of (row, tag).
__device__ __forceinline__ uint4 philox_draws(uint64_t seed, uint64_t offset, uint32_t row, uint32_t tag, uint32_t q) {
  return philox4x32(make_uint4(q, row + (tag << 28), static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)),
                    seed);
}

__device__ __forceinline__ uint32_t word(const uint4& w, int lane) {
  return lane == 0 ? w.x : lane == 1 ? w.y : lane == 2 ? w.z : w.w;
}

__device__ __forceinline__ float uniform(uint64_t seed, uint64_t offset, uint32_t row, uint32_t tag, uint32_t i) {
  return to_unit(word(philox_draws(seed, offset, row, tag, i >> 2), i & 3));
}

// Race weight 1 / E of a final-sample draw, E = -log(u): the exponential race scores r_v * (1 / E_v)
// (one reciprocal instead of two divisions per entry; 1-ulp differences only). Every kernel that bounds
// or scores the race uses this one function, so its values agree bit for bit.
__device__ __forceinline__ float race_weight(uint32_t w) { return __frcp_rn(-logf(to_unit(w))); }

// Race bounds are stored as power-of-two exponents: the smallest e with 2^e >= m (m > 0 finite, normal).
__device__ __forceinline__ int8_t pow2_ceil_exponent(float m) {
  const uint32_t bits = __float_as_uint(m);
  return static_cast<int8_t>(static_cast<int>(bits >> 23) - 127 + ((bits & 0x7fffffu) != 0u));
}

__device__ __forceinline__ float pow2_of(int8_t e) { return __int_as_float((static_cast<int>(e) + 127) << 23); }

// ---- keys: unsigned order == float order (-0 folded into +0, as float comparisons do)
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f + 0.0f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// ---- the sampling distribution of one row
struct RowDist {
  float max;          // largest logit
  float sum;          // sum over kept v of weight(v)
  int argmax;         // lowest index of the largest logit
  uint32_t keep_key;  // v is kept iff order_key(l_v) >= keep_key (0: all)
  uint32_t sag_key;   // Saguaro weight sag_x iff order_key(l_v) >= sag_key
  float sag_x;        // 1: no rescaling
  float scale;        // log2(e) / T; 0 for greedy rows
  float inv_t;        // 1 / T; 0 for greedy rows
};

// Unnormalized weight of a token with logit l: keep * w * exp((l - max) / T).
__device__ __forceinline__ float row_weight(const RowDist& d, float l) {
  const uint32_t key = order_key(l);
  if (key < d.keep_key) return 0.f;
  const float e = exp2f((l - d.max) * d.scale);
  return key >= d.sag_key ? e * d.sag_x : e;
}

__device__ __forceinline__ float row_prob(const RowDist& d, float l) { return row_weight(d, l) / d.sum; }

// ---- online (max, argmax, sum of exp) statistics
struct Stat {
  float m, s;
  int idx;  // lowest index of the max; statistics blocks of sampled rows leave it INT_MAX (never read)
};

__device__ __forceinline__ Stat empty_stat() { return {-INFINITY, 0.f, INT_MAX}; }

__device__ __forceinline__ float rescaled(const Stat& a, float m, float scale) {
  return a.s == 0.f ? 0.f : a.s * exp2f((a.m - m) * scale);
}

__device__ __forceinline__ Stat merge(const Stat& a, const Stat& b, float scale) {
  const bool take_b = b.m > a.m || (b.m == a.m && b.idx < a.idx);
  Stat r;
  r.m = take_b ? b.m : a.m;
  r.idx = take_b ? b.idx : a.idx;
  r.s = rescaled(a, r.m, scale) + rescaled(b, r.m, scale);
  return r;
}

__device__ __forceinline__ void accumulate(Stat& st, float x, int v, float scale) {
  if (x > st.m) {
    st.s = (st.s == 0.f ? 0.f : st.s * exp2f((st.m - x) * scale)) + 1.f;
    st.m = x;
    st.idx = v;
  } else if (x > -INFINITY) {
    st.s += exp2f((x - st.m) * scale);
  }
}

// 2^x with one MUFU.EX2 (approximate, ~2 ulp; flushes tiny results to 0; 2^-inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// A block of N elements (N a multiple of 4), element k at vocabulary index index_of(k) (ascending in k).
// Greedy rows (scale 0) need the max and its lowest index; sampled rows need the max and the sum of
// exp2((x - max) * scale), one fused multiply-add and one MUFU.EX2 per element, and never read the
// index (ties in merge() pick the same max and the same sum either way), so it is left INT_MAX.
template <int N, typename IndexOf>
__device__ __forceinline__ void accumulate_block(Stat& st, const float (&x)[N], IndexOf index_of, float scale) {
  static_assert(N % 4 == 0, "blocks of 4k elements");
  float m0 = x[0], m1 = x[1], m2 = x[2], m3 = x[3];  // four independent max chains
#pragma unroll
  for (int k = 4; k < N; k += 4) {
    m0 = fmaxf(m0, x[k]);
    m1 = fmaxf(m1, x[k + 1]);
    m2 = fmaxf(m2, x[k + 2]);
    m3 = fmaxf(m3, x[k + 3]);
  }
  const float bm = fmaxf(fmaxf(m0, m1), fmaxf(m2, m3));
  if (bm > st.m) {
    if (scale > 0.f) {
      st.s = st.s == 0.f ? 0.f : st.s * exp2f((st.m - bm) * scale);
    } else {
      int bi = INT_MAX;
#pragma unroll
      for (int k = N - 1; k >= 0; --k) bi = x[k] == bm ? index_of(k) : bi;
      st.idx = bi;
    }
    st.m = bm;
  }
  if (scale > 0.f && st.m > -INFINITY) {
    const float ms = st.m * scale;
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < N; ++k) sum += fast_exp2(fmaf(x[k], scale, -ms));
    st.s += sum;
  }
}

// Warp-wide merge: the max by a butterfly, each lane's sum rescaled to it once (one MUFU.EX2), then a sum
// butterfly (commutative pairs: every lane gets the same bits); greedy rows keep the lowest index of the max.
// ~35 instructions, against ~215 for five rounds of pairwise merge() with accurate exp2f.
__device__ __forceinline__ Stat warp_merge(const Stat& st, float scale) {
  float m = st.m;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float s = st.s == 0.f ? 0.f : st.s * fast_exp2((st.m - m) * scale);
  int idx = st.m == m ? st.idx : INT_MAX;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_xor_sync(0xffffffffu, s, o);
    idx = min(idx, __shfl_xor_sync(0xffffffffu, idx, o));
  }
  return {m, s, idx};
}

// Block-wide merge; every thread gets the result (the warps' partials merged in a fixed order, max first).
// blockDim.x == kThreads.
__device__ __forceinline__ Stat block_merge(const Stat& st, float scale) {
  __shared__ Stat warp_stats[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const Stat w = warp_merge(st, scale);
  __syncthreads();  // warp_stats may still be read by a previous call
  if (lane == 0) warp_stats[warp] = w;
  __syncthreads();
  float m = warp_stats[0].m;
#pragma unroll
  for (int i = 1; i < kThreads / 32; ++i) m = fmaxf(m, warp_stats[i].m);
  float s = 0.f;
  int idx = INT_MAX;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) {
    const Stat p = warp_stats[i];
    if (p.s != 0.f) s += p.s * fast_exp2((p.m - m) * scale);
    if (p.m == m) idx = min(idx, p.idx);
  }
  return {m, s, idx};
}

// Best (largest score, lowest index on ties) candidate of a sampling pass, plus a fallback candidate.
struct Pick {
  float score;
  int idx;
  float fb_score;
  int fb_idx;
};

__device__ __forceinline__ Pick empty_pick() { return {-1.f, INT_MAX, -1.f, INT_MAX}; }

__device__ __forceinline__ void offer(float& best, int& best_idx, float score, int idx) {
  if (score > best || (score == best && idx < best_idx)) {
    best = score;
    best_idx = idx;
  }
}

__device__ __forceinline__ Pick better(Pick a, const Pick& b) {
  offer(a.score, a.idx, b.score, b.idx);
  offer(a.fb_score, a.fb_idx, b.fb_score, b.fb_idx);
  return a;
}

__device__ __forceinline__ Pick warp_best(Pick p) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Pick other{__shfl_xor_sync(0xffffffffu, p.score, o), __shfl_xor_sync(0xffffffffu, p.idx, o),
               __shfl_xor_sync(0xffffffffu, p.fb_score, o), __shfl_xor_sync(0xffffffffu, p.fb_idx, o)};
    p = better(p, other);
  }
  return p;
}

template <int kBlock = kThreads>  // blockDim.x
__device__ __forceinline__ Pick block_best(Pick p) {
  __shared__ Pick warp_picks[kBlock / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  p = warp_best(p);
  __syncthreads();
  if (lane == 0) warp_picks[warp] = p;
  __syncthreads();
  p = warp_picks[0];
  for (int w = 1; w < kBlock / 32; ++w) p = better(p, warp_picks[w]);
  return p;
}

__device__ __forceinline__ float block_sum_f(float v) {
  __shared__ float warp_sums[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = 0.f;
  for (int w = 0; w < kThreads / 32; ++w) v += warp_sums[w];  // fixed order: deterministic
  return v;
}

__device__ __forceinline__ float block_max_f(float v) {
  __shared__ float warp_max[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  v = warp_max[0];
  for (int w = 1; w < kThreads / 32; ++w) v = fmaxf(v, warp_max[w]);
  return v;
}

// ---- element loops over [lo, hi) of a row: f(v, x) for every element, 16-byte loads when vec_ok
// (row start aligned, lo a multiple of VEC), four loads in flight per thread.
template <typename T, int VEC, typename F>
__device__ __forceinline__ void for_each(const T* row, int lo, int hi, bool vec_ok, F&& f) {
  if (vec_ok) {
    const int vhi = lo + (hi - lo) / VEC * VEC;
    const int step = blockDim.x * VEC;
    int v = lo + threadIdx.x * VEC;
    for (; v + 3 * step < vhi; v += 4 * step) {
      Vec<T, VEC> d[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) d[u].load(row + v + u * step);
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int j = 0; j < VEC; ++j) f(v + u * step + j, to_float(d[u].data[j]));
    }
    for (; v < vhi; v += step) {
      Vec<T, VEC> d;
      d.load(row + v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) f(v + j, to_float(d.data[j]));
    }
    for (int s = vhi + threadIdx.x; s < hi; s += blockDim.x) f(s, to_float(row[s]));
  } else {
    for (int s = lo + threadIdx.x; s < hi; s += blockDim.x) f(s, to_float(row[s]));
  }
}

// Two rows of the same type at once: f(v, row[v], row2[v]) (vec_ok: both rows 16-byte aligned).
template <typename T, int VEC, typename F>
__device__ __forceinline__ void for_each_pair(const T* row, const T* row2, int lo, int hi, bool vec_ok, F&& f) {
  int tail = lo + threadIdx.x;
  if (vec_ok) {
    const int vhi = lo + (hi - lo) / VEC * VEC;
    const int step = blockDim.x * VEC;
    int v = lo + threadIdx.x * VEC;
    for (; v + step < vhi; v += 2 * step) {
      Vec<T, VEC> d[2], e[2];
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        d[u].load(row + v + u * step);
        e[u].load(row2 + v + u * step);
      }
#pragma unroll
      for (int u = 0; u < 2; ++u)
#pragma unroll
        for (int j = 0; j < VEC; ++j) f(v + u * step + j, to_float(d[u].data[j]), to_float(e[u].data[j]));
    }
    for (; v < vhi; v += step) {
      Vec<T, VEC> d, e;
      d.load(row + v);
      e.load(row2 + v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) f(v + j, to_float(d.data[j]), to_float(e.data[j]));
    }
    tail = vhi + threadIdx.x;
  }
  for (int s = tail; s < hi; s += blockDim.x) f(s, to_float(row[s]), to_float(row2[s]));
}

// Max of a 16-byte vector (16-bit types: packed two-way maxima).
template <typename T, int VEC>
__device__ __forceinline__ float vec_max(const Vec<T, VEC>& d) {
  if constexpr (std::is_same_v<T, float>) {
    return fmaxf(fmaxf(d.data[0], d.data[1]), fmaxf(d.data[2], d.data[3]));
  } else {
    using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
    const T2* h = reinterpret_cast<const T2*>(d.data);
    const T2 m = __hmax2(__hmax2(h[0], h[1]), __hmax2(h[2], h[3]));
    return fmaxf(to_float(m.x), to_float(m.y));
  }
}

// ---- statistics tiles: kTileVecs 16-byte vectors per thread, vector u of thread t at base + (t + u * kThreads)
// * VEC (kThreads * kTileVecs * VEC entries per CTA: 16384 for 16-bit logits), loaded in one go (128 bytes
// in flight per thread) and folded in two passes over the thread's vectors (max, then sums). Every
// statistics pass folds tiles this way, so partials agree across kernels. Vectors past `hi` are not loaded
// and count as -inf.
constexpr int kTileVecs = 8;

template <typename T, int VEC>
struct StatTile {
  static constexpr int kEntries = kThreads * kTileVecs * VEC;

  __device__ __forceinline__ static int vec_index(int base, int u) { return base + (threadIdx.x + u * kThreads) * VEC; }

  // Folds the tile at base into st; vec_at(u) returns this thread's vector u. The tile's max first (16-bit
  // types: packed two-way maxima), then for sampled rows one rescale of the running sum and one FMA + one
  // MUFU.EX2 + one add per entry in four chains; greedy rows (scale 0) take the lowest index of a new max
  // (a thread's entries ascend across its vectors and tiles).
  template <typename VecAt>
  __device__ __forceinline__ static void accumulate(Stat& st, int base, int hi, float scale, VecAt&& vec_at) {
    float tm = -INFINITY;
#pragma unroll
    for (int u = 0; u < kTileVecs; ++u)
      if (vec_index(base, u) + VEC <= hi) tm = fmaxf(tm, vec_max(vec_at(u)));
    if (!(tm > -INFINITY)) return;
    if (scale > 0.f) {
      if (tm > st.m) {
        st.s = st.s == 0.f ? 0.f : st.s * exp2f((st.m - tm) * scale);
        st.m = tm;
      }
      const float ms = st.m * scale;
      float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int u = 0; u < kTileVecs; ++u) {
        if (vec_index(base, u) + VEC > hi) continue;
        const Vec<T, VEC> d = vec_at(u);
#pragma unroll
        for (int j = 0; j < VEC; ++j) sum[j % 4] += fast_exp2(fmaf(to_float(d.data[j]), scale, -ms));
      }
      st.s += (sum[0] + sum[1]) + (sum[2] + sum[3]);
    } else if (tm > st.m) {
      int idx = INT_MAX;
#pragma unroll
      for (int u = kTileVecs - 1; u >= 0; --u) {
        if (vec_index(base, u) + VEC > hi) continue;
        const Vec<T, VEC> d = vec_at(u);
#pragma unroll
        for (int j = VEC - 1; j >= 0; --j) idx = to_float(d.data[j]) == tm ? vec_index(base, u) + j : idx;
      }
      st.m = tm;
      st.idx = idx;
    }
  }
};

// A chunk of at most one tile staged in shared memory by cp.async (sm_80+): each thread copies and later
// reads only its own slots (slot u of thread t at slots[u * kThreads + t]: conflict-free), so no barrier is
// needed between folding one chunk and loading the next into the same slots, and chunks in flight cost no
// registers. Every load() commits one cp.async group (empty if nothing is copied).
template <typename T, int VEC>
struct AsyncTile {
  Vec<T, VEC>* slots;  // [kTileVecs * kThreads] in shared memory

  __device__ __forceinline__ static int vec_end(int lo, int hi) { return lo + (hi - lo) / VEC * VEC; }

  // Starts copying the 16-byte vectors of [lo, hi) (lo a multiple of VEC, hi - lo <= kEntries).
  __device__ __forceinline__ void load(const T* row, int lo, int hi) const {
    const int vhi = vec_end(lo, hi);
#pragma unroll
    for (int u = 0; u < kTileVecs; ++u) {
      const int v = StatTile<T, VEC>::vec_index(lo, u);
      if (v + VEC > vhi) continue;
      const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(&slots[u * kThreads + threadIdx.x]));
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(row + v) : "memory");
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  }

  // Waits until at most kPending of this thread's most recent loads are still in flight.
  template <int kPending>
  __device__ __forceinline__ static void wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
  }

  // This thread's statistics of [lo, hi) once its load(row, lo, hi) has landed (see wait), single elements
  // past the vectors read directly.
  __device__ __forceinline__ Stat stats(const T* row, int lo, int hi, float scale) const {
    const int vhi = vec_end(lo, hi);
    Stat st = empty_stat();
    StatTile<T, VEC>::accumulate(st, lo, vhi, scale, [&](int u) { return slots[u * kThreads + threadIdx.x]; });
    for (int s = vhi + threadIdx.x; s < hi; s += kThreads) accumulate(st, to_float(row[s]), s, scale);
    return st;
  }
};

// Block-merged statistics of [lo, hi) of a row (lo a multiple of VEC when vec_ok): tiles over the
// 16-byte-aligned part, single elements for the rest; every thread gets the result.
template <typename T, int VEC>
__device__ __forceinline__ Stat row_stats(const T* row, int lo, int hi, bool vec_ok, float scale) {
  Stat st = empty_stat();
  int tail = lo + threadIdx.x;
  if (vec_ok) {
    const int vhi = lo + (hi - lo) / VEC * VEC;
    for (int base = lo; base < vhi; base += StatTile<T, VEC>::kEntries) {
      Vec<T, VEC> d[kTileVecs];
#pragma unroll
      for (int u = 0; u < kTileVecs; ++u) {
        const int v = StatTile<T, VEC>::vec_index(base, u);
        if (v + VEC <= vhi) d[u].load(row + v);
      }
      StatTile<T, VEC>::accumulate(st, base, vhi, scale, [&](int u) { return d[u]; });
    }
    tail = vhi + threadIdx.x;
  }
  for (int s = tail; s < hi; s += blockDim.x) accumulate(st, to_float(row[s]), s, scale);
  return block_merge(st, scale);
}

// ---- radix select over order keys (11 + 11 + 10 bits): the key kappa with
//   W(key > kappa) < target <= W(key >= kappa),   W = sum of weight(key, x) (u32 per element)
// over the row, 0 < target <= W(all). Count weights (1) give the target-th largest key.
constexpr int kRadixBins = 2048;

// hist[digit] += w: a native 32-bit shared atomic on the bin's low word, and the carry into its high word
// when that add wraps (a 64-bit shared atomicAdd is a CAS loop, which under the 8 warps' contention on the
// few busy bins took ~0.9 ms per 128k-entry row). Bins are read only after a barrier, when all adds are in.
__device__ __forceinline__ void hist_add(unsigned long long* hist, uint32_t digit, uint32_t w) {
  if (w == 0u) return;
  uint32_t* bin = reinterpret_cast<uint32_t*>(hist + digit);  // little-endian: low word first
  const uint32_t old = atomicAdd(bin, w);
  if (old + w < old) atomicAdd(bin + 1, 1u);
}

// `hist` is a [kRadixBins] shared-memory buffer owned by the kernel (one for every select it runs:
// per-instantiation static buffers would exceed the 48 KB static shared-memory limit).
template <typename T, int VEC, typename WeightFn>
__device__ uint32_t radix_select(const T* row, int n, bool vec_ok, unsigned long long target, WeightFn weight,
                                 unsigned long long* hist) {
  __shared__ unsigned long long warp_tot[kThreads / 32];
  __shared__ uint32_t found_digit;
  __shared__ unsigned long long found_rest;
  constexpr int kBinsPerThread = kRadixBins / kThreads;
  uint32_t prefix = 0;
  int shift = 32;
  for (int round = 0; round < 3; ++round) {
    const int bits = round < 2 ? 11 : 10;
    const int low = shift - bits;
    for (int i = threadIdx.x; i < kRadixBins; i += blockDim.x) hist[i] = 0ull;
    if (threadIdx.x == 0) {  // only reached if target exceeds the total weight: keep the top bin
      found_digit = (1u << bits) - 1u;
      found_rest = target;
    }
    __syncthreads();
    for_each<T, VEC>(row, 0, n, vec_ok, [&](int, float x) {
      const uint32_t key = order_key(x);
      if (round == 0 || (key >> shift) == prefix)
        hist_add(hist, (key >> low) & ((1u << bits) - 1u), weight(key, x));
    });
    __syncthreads();
    // Suffix sums: thread t owns bins [t * kBinsPerThread, (t + 1) * kBinsPerThread).
    unsigned long long own = 0;
    for (int i = 0; i < kBinsPerThread; ++i) own += hist[threadIdx.x * kBinsPerThread + i];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned long long incl = own;  // sum over lanes >= lane within the warp
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long y = __shfl_down_sync(0xffffffffu, incl, o);
      if (lane + o < 32) incl += y;
    }
    if (lane == 0) warp_tot[warp] = incl;
    __syncthreads();
    unsigned long long above = incl - own;
    for (int w = warp + 1; w < kThreads / 32; ++w) above += warp_tot[w];
    for (int i = kBinsPerThread - 1; i >= 0; --i) {
      const int bin = threadIdx.x * kBinsPerThread + i;
      const unsigned long long h = hist[bin];
      if (above < target && target <= above + h) {
        found_digit = static_cast<uint32_t>(bin);
        found_rest = target - above;
      }
      above += h;
    }
    __syncthreads();
    prefix = (prefix << bits) | found_digit;
    target = found_rest;
    shift = low;
    __syncthreads();
  }
  return prefix;
}

// Fixed-point mass of a weight in [0, 1] (top-p sums are exact integers: deterministic).
__device__ __forceinline__ uint32_t fixed_mass(float e) { return __float2uint_rn(e * 16777216.f); }

}  // namespace ssdk::sampling
