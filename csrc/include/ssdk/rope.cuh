// RoPE on q/k in place, optionally fused with Qwen-3's per-head RMSNorm and the paged KV write.
//   rope:     x[..rot] of every q/k head rotated by the angle table row of the token's position
//   norm:     x = round_T(rmsnorm(x) * w) per head first (weights [D]; hf_exact rounds before the w multiply)
//   kv write: rotated k and the v heads also go to k_cache/v_cache[slot // page_size, slot % page_size]
// Pairs: neox (rotate half) (i, i + rot/2); GPT-J (2i, 2i + 1). o1 = x1 c - x2 s, o2 = x2 c + x1 s.
// hf_exact: transformers' apply_rotary_pos_emb in T: c, s rounded to T, each product rounded, then the sum.
// Angles: a [max_position, rot] table (cos | sin, fp32 or T), or float(pos) * inv_freq[i] with sincosf.
// Thread map: one group of G lanes (power of two <= 32) per (token, head); lane l owns chunks l, l + G, ...
// of W pairs-worth of elements (W = 16 B of T when vectorized). A single token still spreads over
// (Hq + Hkv) * G threads, and q and k go through the same launch.
#pragma once
#include "ssdk/common.cuh"

namespace ssdk::rotary {

// kCache: angles from the table; kCacheStore: the same plus the optional paged KV write (Llama's attention
// prologue); kInvFreq: angles from inv_freq; kNormCache: per-head RMSNorm, table angles, optional KV write.
enum class Mode { kCache, kCacheStore, kInvFreq, kNormCache };

template <Mode M> constexpr bool kHasNorm = M == Mode::kNormCache;
template <Mode M> constexpr bool kHasStore = M == Mode::kNormCache || M == Mode::kCacheStore;

template <typename T, typename C>
struct RopeArgs {
  const void* positions;  // [T] int32 or int64
  bool positions_int64;
  T* query;               // [tokens, Hq, D] strided
  T* key;                 // [tokens, Hkv, D] strided, or nullptr
  int64_t q_token_stride, q_head_stride, k_token_stride, k_head_stride;
  int num_tokens, num_q_heads, num_kv_heads, rot_dim;
  const C* cos_sin;       // kCache/kCacheStore/kNormCache: [max_position, rot_dim]
  int64_t max_position;
  const float* inv_freq;  // kInvFreq: [rot_dim / 2]
  bool hf_exact;
  // kNormCache only (rot_dim == head size).
  const T* q_weight;
  const T* k_weight;
  float eps;
  // Paged KV write (kCacheStore/kNormCache, rot_dim == head size); value == nullptr: none.
  const T* value;         // [tokens, Hkv, D] strided
  int64_t v_token_stride, v_head_stride;
  T* k_cache;             // [pages, page_size, Hkv, D], last dim contiguous
  T* v_cache;
  int64_t kc_page_stride, kc_slot_stride, kc_head_stride, vc_page_stride, vc_slot_stride, vc_head_stride;
  const void* slot_mapping;  // [T] int32 or int64
  bool slots_int64;
  int64_t page_size, num_slots;
};

__device__ __forceinline__ int64_t load_index(const void* ptr, bool is_int64, int64_t i) {
  return is_int64 ? static_cast<const int64_t*>(ptr)[i] : static_cast<const int32_t*>(ptr)[i];
}

// N contiguous values of T <-> floats: one 16-byte access when VECTORIZED, else N scalar accesses.
template <typename T, int N, bool VECTORIZED>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[N]) {
  if constexpr (VECTORIZED) {
    constexpr int kPer = (16 / int(sizeof(T))) < N ? 16 / int(sizeof(T)) : N;
#pragma unroll
    for (int i = 0; i < N; i += kPer) {
      Vec<T, kPer> v;
      v.load(p + i);
#pragma unroll
      for (int j = 0; j < kPer; ++j) out[i + j] = to_float(v.data[j]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = to_float(p[j]);
  }
}

template <typename T, int N, bool VECTORIZED>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[N]) {
  if constexpr (VECTORIZED) {
    Vec<T, N> v;
#pragma unroll
    for (int j = 0; j < N; ++j) v.data[j] = from_float<T>(in[j]);
    v.store(p);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) p[j] = from_float<T>(in[j]);
  }
}

// Rotates one pair. hf_exact: every product and the sum rounded to T (no FMA contraction).
template <typename T>
__device__ __forceinline__ void rotate_pair(float& x1, float& x2, float c, float s, bool hf_exact) {
  if (hf_exact) {
    c = round_to<T>(c);
    s = round_to<T>(s);
    const float o1 = round_to<T>(round_to<T>(__fmul_rn(x1, c)) - round_to<T>(__fmul_rn(x2, s)));
    const float o2 = round_to<T>(round_to<T>(__fmul_rn(x2, c)) + round_to<T>(__fmul_rn(x1, s)));
    x1 = o1;
    x2 = o2;
  } else {
    const float o1 = x1 * c - x2 * s;
    const float o2 = x2 * c + x1 * s;
    x1 = o1;
    x2 = o2;
  }
}

// W: elements per chunk (per half for neox). NC: chunks per lane. LANES_LOG2 is a runtime group size.
template <typename T, typename C, int W, bool VECTORIZED, int NC, bool NEOX, Mode MODE>
__global__ void __launch_bounds__(256) rope_kernel(RopeArgs<T, C> a, int lanes_log2, int heads_total) {
  constexpr int kPairs = NEOX ? W : W / 2;  // pairs (angles) per chunk
  const int64_t gid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int lanes = 1 << lanes_log2;
  const int lane = int(gid & (lanes - 1));
  const int64_t group = gid >> lanes_log2;
  const int64_t token = group / heads_total;
  if (token >= a.num_tokens) return;  // whole groups leave together
  pdl_wait();  // q/k/v and positions may come from the previous kernel
  pdl_launch_dependents();
  const int head = int(group - token * heads_total);
  const int half = a.rot_dim / 2;
  const int num_chunks = a.rot_dim / (2 * kPairs);

  // Which head: q, k, or (with a KV write) v, which is only copied into the cache.
  const bool is_q = head < a.num_q_heads;
  const bool is_v = head >= a.num_q_heads + a.num_kv_heads;
  const int kv_head = is_q ? 0 : head - a.num_q_heads - (is_v ? a.num_kv_heads : 0);
  T* x_ptr = is_q ? a.query + token * a.q_token_stride + head * a.q_head_stride
                  : a.key + token * a.k_token_stride + kv_head * a.k_head_stride;
  const T* src = is_v ? a.value + token * a.v_token_stride + kv_head * a.v_head_stride : x_ptr;

  // Element offsets of chunk c: neox lo = c*W, hi = half + c*W; GPT-J one chunk of W at c*W.
  // Every independent load goes out before any use, so a (token, head) costs one memory round trip
  // plus the position -> angle-row hop: x, the norm weights, then the angles.
  const int64_t pos = load_index(a.positions, a.positions_int64, token);
  float x1[NC][W], x2[NC][W];  // x2 unused for GPT-J
#pragma unroll
  for (int i = 0; i < NC; ++i) {
    const int c = lane + i * lanes;
    if (c >= num_chunks) break;
    load_floats<T, W, VECTORIZED>(src + c * W, x1[i]);
    if constexpr (NEOX) load_floats<T, W, VECTORIZED>(src + half + c * W, x2[i]);
  }
  float w1[NC][W], w2[NC][W];  // kNormCache: the q_norm / k_norm weights of this lane's elements
  if constexpr (kHasNorm<MODE>) {
    if (!is_v) {
      const T* w_ptr = is_q ? a.q_weight : a.k_weight;
#pragma unroll
      for (int i = 0; i < NC; ++i) {
        const int c = lane + i * lanes;
        if (c >= num_chunks) break;
        load_floats<T, W, VECTORIZED>(w_ptr + c * W, w1[i]);
        if constexpr (NEOX) load_floats<T, W, VECTORIZED>(w_ptr + half + c * W, w2[i]);
      }
    }
  }
  const bool in_table = MODE == Mode::kInvFreq || (pos >= 0 && pos < a.max_position);
  float cos_v[NC][kPairs], sin_v[NC][kPairs];
  if (!is_v) {
#pragma unroll
    for (int i = 0; i < NC; ++i) {
      const int c = lane + i * lanes;
      if (c >= num_chunks) break;
      const int pair0 = c * kPairs;
      if constexpr (MODE == Mode::kInvFreq) {
        float inv_freq[kPairs];
        load_floats<float, kPairs, VECTORIZED>(a.inv_freq + pair0, inv_freq);
#pragma unroll
        for (int j = 0; j < kPairs; ++j) sincosf(static_cast<float>(pos) * inv_freq[j], &sin_v[i][j], &cos_v[i][j]);
      } else if (in_table) {
        const C* row = a.cos_sin + pos * a.rot_dim;
        load_floats<C, kPairs, VECTORIZED>(row + pair0, cos_v[i]);
        load_floats<C, kPairs, VECTORIZED>(row + half + pair0, sin_v[i]);
      } else {  // out of the table: poison the token (no host sync to raise)
#pragma unroll
        for (int j = 0; j < kPairs; ++j) cos_v[i][j] = sin_v[i][j] = __int_as_float(0x7fc00000);
      }
    }
  }

  int64_t slot = -1;
  if constexpr (kHasStore<MODE>) {
    if (a.value != nullptr && !is_q) {
      slot = load_index(a.slot_mapping, a.slots_int64, token);
      if (slot >= a.num_slots) slot = -1;
    }
  }
  auto cache_ptr = [&](bool v_cache) -> T* {
    const int64_t page = slot / a.page_size, offset = slot - page * a.page_size;
    return v_cache ? a.v_cache + page * a.vc_page_stride + offset * a.vc_slot_stride + kv_head * a.vc_head_stride
                   : a.k_cache + page * a.kc_page_stride + offset * a.kc_slot_stride + kv_head * a.kc_head_stride;
  };
  auto for_chunks = [&](auto&& store) {
#pragma unroll
    for (int i = 0; i < NC; ++i) {
      const int c = lane + i * lanes;
      if (c >= num_chunks) break;
      store(c, i);
    }
  };

  if (kHasStore<MODE> && is_v) {
    if (slot >= 0) {
      T* dst = cache_ptr(true);
      for_chunks([&](int c, int i) {
        store_floats<T, W, VECTORIZED>(dst + c * W, x1[i]);
        if constexpr (NEOX) store_floats<T, W, VECTORIZED>(dst + half + c * W, x2[i]);
      });
    }
    return;
  }

  if constexpr (kHasNorm<MODE>) {
    float sum_sq = 0.f;
#pragma unroll
    for (int i = 0; i < NC; ++i) {
      if (lane + i * lanes >= num_chunks) break;
#pragma unroll
      for (int j = 0; j < W; ++j) sum_sq += x1[i][j] * x1[i][j] + (NEOX ? x2[i][j] * x2[i][j] : 0.f);
    }
    const unsigned mask = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1) << (threadIdx.x & 31 & ~(lanes - 1));
    for (int offset = lanes >> 1; offset > 0; offset >>= 1) sum_sq += __shfl_xor_sync(mask, sum_sq, offset, lanes);
    const float rstd = rsqrtf(sum_sq / a.rot_dim + a.eps);
    for_chunks([&](int c, int i) {
#pragma unroll
      for (int j = 0; j < W; ++j) {
        const float n1 = x1[i][j] * rstd;
        x1[i][j] = round_to<T>((a.hf_exact ? round_to<T>(n1) : n1) * w1[i][j]);
        if constexpr (NEOX) {
          const float n2 = x2[i][j] * rstd;
          x2[i][j] = round_to<T>((a.hf_exact ? round_to<T>(n2) : n2) * w2[i][j]);
        }
      }
    });
  }

  for_chunks([&](int c, int i) {
#pragma unroll
    for (int j = 0; j < kPairs; ++j) {
      if constexpr (NEOX) {
        rotate_pair<T>(x1[i][j], x2[i][j], cos_v[i][j], sin_v[i][j], a.hf_exact);
      } else {
        rotate_pair<T>(x1[i][2 * j], x1[i][2 * j + 1], cos_v[i][j], sin_v[i][j], a.hf_exact);
      }
    }
    store_floats<T, W, VECTORIZED>(x_ptr + c * W, x1[i]);
    if constexpr (NEOX) store_floats<T, W, VECTORIZED>(x_ptr + half + c * W, x2[i]);
  });
  if (kHasStore<MODE> && slot >= 0) {
    T* dst = cache_ptr(false);
    for_chunks([&](int c, int i) {
      store_floats<T, W, VECTORIZED>(dst + c * W, x1[i]);
      if constexpr (NEOX) store_floats<T, W, VECTORIZED>(dst + half + c * W, x2[i]);
    });
  }
}

inline int ceil_log2(int n) {
  int l = 0;
  while ((1 << l) < n) ++l;
  return l;
}

template <typename T, typename C, int W, bool VECTORIZED, int NC, bool NEOX, Mode MODE>
cudaError_t launch_with(const RopeArgs<T, C>& a, int num_chunks, int heads_total, cudaStream_t stream) {
  const int lanes_log2 = ceil_log2((num_chunks + NC - 1) / NC);
  const int64_t threads = (int64_t(a.num_tokens) * heads_total) << lanes_log2;
  const int block = threads <= (int64_t{128} << 10) ? 128 : 256;  // small launches: spread over more SMs
  const int64_t grid = (threads + block - 1) / block;
  if (grid >= (int64_t{1} << 31)) return cudaErrorInvalidConfiguration;
  return launch_pdl(rope_kernel<T, C, W, VECTORIZED, NC, NEOX, MODE>, dim3(unsigned(grid)), dim3(block), 0,
                    stream, a, lanes_log2, heads_total);
}

// Picks 16-byte chunks when the caller found every q/k/v/cache/weight row and head 16-byte aligned
// (tensors_aligned16) and the table rows allow it; else scalar chunks (rot_dim <= 256).
template <typename T, typename C, bool NEOX, Mode MODE>
cudaError_t launch_rope(const RopeArgs<T, C>& a, bool tensors_aligned16, cudaStream_t stream) {
  if (a.num_tokens == 0) return cudaSuccess;
  const int heads_total =
      a.num_q_heads + (a.key ? a.num_kv_heads : 0) + (kHasStore<MODE> && a.value ? a.num_kv_heads : 0);
  constexpr int kVec = 16 / sizeof(T);
  constexpr int kPairs = NEOX ? kVec : kVec / 2;
  const int half = a.rot_dim / 2;
  bool table_aligned;
  if constexpr (MODE == Mode::kInvFreq) {
    table_aligned = is_aligned(a.inv_freq, 16);
  } else {
    constexpr int kTableAccess = kPairs * sizeof(C) < 16 ? kPairs * sizeof(C) : 16;
    table_aligned = is_aligned(a.cos_sin, 16) && (half * sizeof(C)) % kTableAccess == 0;
  }
  const int vec_chunks = half / kPairs;
  if (tensors_aligned16 && table_aligned && half % kPairs == 0 && vec_chunks <= 32)
    return launch_with<T, C, kVec, true, 1, NEOX, MODE>(a, vec_chunks, heads_total, stream);
  constexpr int kScalar = NEOX ? 1 : 2;  // one pair per chunk
  if (half > 32 * 4) return cudaErrorInvalidValue;
  return launch_with<T, C, kScalar, false, 4, NEOX, MODE>(a, half, heads_total, stream);
}

}  // namespace ssdk::rotary
