// verify_chain for batches (B >= 2) in one launch, from logits without top-k / top-p / Saguaro: one
// thread-block cluster of C CTAs per request (sm_90), CTA `rank` owning the vocabulary slice
// [rank * chunk, (rank + 1) * chunk) of every row of its request (K + 1 target rows, then K draft rows when
// the call has draft logits):
//   1. the CTA streams its slice of each row in tiles (kVecs 16-byte vectors per thread) through
//      kClusterStages cp.async stages; each thread copies and folds only its own slots, so the loop has no
//      barrier, and the fold is lean (fold_tile: the tile's max, then one FMA + one MUFU.EX2 + one add per
//      entry). Between tiles, stochastic requests draw their slice's race bounds (see verify.cuh) while the
//      next tiles are in flight;
//   2. each row's partial over the slice -> partials[row * C + rank], a fence, the cluster barrier;
//   3. every CTA decides the request (decide_chain: the same partials merged in the same order, so the same
//      bits and decision in every CTA), then races over its slice of the final row (race_chunk: rows this
//      CTA read a few microseconds earlier, so the second read is mostly L2);
//   4. picks -> picks[b * C + rank], a fence, the cluster barrier; rank 0 reduces them and writes the
//      request's outputs.
// The cluster barrier is the only hand-off: no counters, atomics or spin-waits, so no zero_kernel, and the
// cluster's CTAs are co-scheduled by the hardware, so no residency assumption. Against stats_kernel +
// verify_kernel this drops two launches, the per-request ready count and every sample CTA's redundant
// decision; against chain_resident (B = 1) it holds no row in shared memory past its fold.
#pragma once
#include <type_traits>

#include "ssdk/verify.cuh"

namespace ssdk::sampling {

constexpr int kClusterMaxRows = 64;  // rows per request: 2K + 1 (K + 1 without draft logits)

// Tiles of kVecs 16-byte vectors per thread (thread t's vector u at entry base + (t + u * kThreads) * VEC);
// stages in flight per CTA: 4 of 16 KB (kVecs 4) or 3 of 32 KB (kVecs 8).
template <int kVecs>
constexpr int kClusterStages = kVecs == 4 ? 4 : 3;
template <int kVecs>
constexpr size_t cluster_smem_bytes() { return static_cast<size_t>(kClusterStages<kVecs>) * kVecs * kThreads * 16; }

// Max of a vector (16-bit types: packed two-way maxima).
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

// Folds this thread's vectors of a staged tile into its running statistics of the row: the tile's max first,
// then (sampled rows) one rescale and exp2((x - max) * scale) per entry in four chains, or (greedy rows, scale
// 0) the lowest index of a new max. Vectors past vhi are skipped; a thread's entries ascend across its tiles.
template <typename T, int VEC, int kVecs>
__device__ __forceinline__ void fold_tile(Stat& st, const Vec<T, VEC>* slots, int first, int vhi, float scale) {
  constexpr int kStep = kThreads * VEC;
  float tm = -INFINITY;
#pragma unroll
  for (int u = 0; u < kVecs; ++u)
    if (first + u * kStep + VEC <= vhi) tm = fmaxf(tm, vec_max(slots[u * kThreads]));
  if (!(tm > -INFINITY)) return;
  if (scale > 0.f) {
    if (tm > st.m) {
      st.s = st.s == 0.f ? 0.f : st.s * fast_exp2((st.m - tm) * scale);
      st.m = tm;
    }
    const float ms = st.m * scale;
    float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int u = 0; u < kVecs; ++u) {
      if (first + u * kStep + VEC > vhi) continue;
      const Vec<T, VEC> d = slots[u * kThreads];
#pragma unroll
      for (int j = 0; j < VEC; ++j) sum[j % 4] += fast_exp2(fmaf(to_float(d.data[j]), scale, -ms));
    }
    st.s += (sum[0] + sum[1]) + (sum[2] + sum[3]);
  } else if (tm > st.m) {
    int idx = INT_MAX;
#pragma unroll
    for (int u = kVecs - 1; u >= 0; --u) {
      if (first + u * kStep + VEC > vhi) continue;
      const Vec<T, VEC> d = slots[u * kThreads];
#pragma unroll
      for (int j = VEC - 1; j >= 0; --j) idx = to_float(d.data[j]) == tm ? first + u * kStep + j : idx;
    }
    st.m = tm;
    st.idx = idx;
  }
}

// Merge of the lanes' statistics (every lane gets the same bits): the max, each sum rescaled once, a sum
// butterfly; the lowest index of the max.
__device__ __forceinline__ Stat warp_merge_fast(const Stat& st, float scale) {
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

template <typename T, int VEC, int kVecs>
__global__ void __launch_bounds__(kThreads, 2) chain_cluster_kernel(VerifyArgs<T> a) {
  extern __shared__ uint4 cluster_smem[];  // kClusterStages tiles
  __shared__ Stat s_part[kClusterMaxRows][kThreads / 32];
  __shared__ Decision dec;
  __shared__ ChainToken s_tok[kCachedPositions];
  constexpr int kStages = kClusterStages<kVecs>, kTile = kThreads * kVecs * VEC;
  const int C = a.S, b = static_cast<int>(blockIdx.x) / C, rank = static_cast<int>(blockIdx.x) % C;
  const int R = a.map.rows_per_req, K = a.map.K, lo = rank * a.chunk, hi = min(a.vocab, lo + a.chunk);
  const int vhi = lo + (hi - lo) / VEC * VEC;
  const int tiles = (hi - lo + kTile - 1) / kTile, items = R * tiles;  // item i: row i / tiles, tile i % tiles
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Vec<T, VEC>* slots = reinterpret_cast<Vec<T, VEC>*>(cluster_smem) + threadIdx.x;  // this thread's slots
  auto row_ptr = [&](int j) {  // row j of this request: target rows 0..K, then draft rows
    return j <= K ? a.map.target + (static_cast<int64_t>(b) * (K + 1) + j) * a.map.target_stride
                  : a.map.draft + (static_cast<int64_t>(b) * K + (j - K - 1)) * a.map.draft_stride;
  };
  pdl_wait();  // the logits may come from the previous kernel of the stream
  pdl_launch_dependents();
  // Producer: item (pj, pt) into stage p % kStages; commits one cp.async group per call (empty past the end).
  int p = 0, pj = 0, pt = 0;
  auto issue = [&]() {
    if (p < items) {
      const T* row = row_ptr(pj);
      Vec<T, VEC>* dst = slots + (p % kStages) * kVecs * kThreads;
      const int first = lo + pt * kTile + static_cast<int>(threadIdx.x) * VEC;
#pragma unroll
      for (int u = 0; u < kVecs; ++u) {
        const int v = first + u * kThreads * VEC;
        if (v + VEC > vhi) break;
        const uint32_t saddr = static_cast<uint32_t>(__cvta_generic_to_shared(dst + u * kThreads));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(saddr), "l"(row + v) : "memory");
      }
      if (++pt == tiles) pt = 0, ++pj;
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
    ++p;
  };
#pragma unroll
  for (int i = 0; i < kStages; ++i) issue();
  for (int i = threadIdx.x; i <= K && i < kCachedPositions; i += kThreads) s_tok[i] = load_chain_token(a, b, i);
  const uint64_t offset = run_offset(a.offset, a.offset_tensor);
  float scale, inv_t;
  temperature_scales(a.temperature, b, scale, inv_t);
  // This slice's race bounds, a share per item: groups [g_lo, g_hi) (a slice ends on a group boundary).
  int8_t* bounds = a.race_bounds != nullptr && scale > 0.f ? a.race_bounds + static_cast<int64_t>(b) * a.bounds_stride : nullptr;
  const int g_lo = lo / 4, g_hi = min(a.bounds_stride, (lo + a.chunk) / 4), g_share = (g_hi - g_lo + items - 1) / items;

  Stat st = empty_stat();
  for (int i = 0, j = 0, t = 0; i < items; ++i) {
    asm volatile("cp.async.wait_group %0;" ::"n"(kStages - 1) : "memory");  // item i has landed
    const int first = lo + t * kTile + static_cast<int>(threadIdx.x) * VEC;
    fold_tile<T, VEC, kVecs>(st, slots + (i % kStages) * kVecs * kThreads, first, vhi, scale);
    issue();
    if (bounds != nullptr) {
      const int g_end = min(g_hi, g_lo + (i + 1) * g_share);
      for (int g = g_lo + i * g_share + static_cast<int>(threadIdx.x); g < g_end; g += kThreads)
        bounds[g] = race_bound(a.seed, offset, b, g);
    }
    if (++t == tiles) {  // the row's last tile: entries past the last vector, then the warp's partial
      for (int v = vhi + static_cast<int>(threadIdx.x); v < hi; v += kThreads) accumulate(st, to_float(row_ptr(j)[v]), v, scale);
      st = warp_merge_fast(st, scale);
      if (lane == 0) s_part[j][warp] = st;
      st = empty_stat();
      t = 0;
      ++j;
    }
  }
  __syncthreads();  // s_part, and the bounds race_chunk reads below (this CTA's own)
  if (threadIdx.x < R) {
    Stat part = s_part[threadIdx.x][0];
    for (int w = 1; w < kThreads / 32; ++w) part = merge(part, s_part[threadIdx.x][w], scale);
    a.partials[(static_cast<int64_t>(b) * R + threadIdx.x) * C + rank] = part;
    __threadfence();
  }
  cluster_sync();  // every partial of the request (release / acquire)

  decide_chain<T, kChain>(a, b, offset, s_tok, dec);
  const bool sample = dec.token < 0;  // (the same in every CTA of the cluster)
  if (sample) {
    const Pick pick = race_chunk<T, VEC>(a, dec, b, lo, hi, offset);
    if (threadIdx.x == 0) {
      a.picks[static_cast<int64_t>(b) * C + rank] = pick;
      __threadfence();
    }
  }
  cluster_sync();  // every pick of the request
  if (rank != 0 || warp != 0) return;
  int token = dec.token;
  if (sample) {
    const Pick best = warp_reduce_picks(a.picks + static_cast<int64_t>(b) * C, C);
    token = best.score > 0.f ? best.idx : best.fb_idx;
  }
  const int L = dec.accept_len;
  if (lane == 0) a.accept_len[b] = L;
  for (int i = lane; i < a.out_width; i += 32)
    a.out_tokens[static_cast<int64_t>(b) * a.out_width + i] =
        i < L ? load_id(a.ids, a.ids_int64, static_cast<int64_t>(b) * K + i) : i == L ? token : -1;
}

}  // namespace ssdk::sampling
