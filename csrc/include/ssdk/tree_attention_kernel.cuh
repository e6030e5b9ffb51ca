// Tree attention kernels on tensor cores: CuTe's SM80 atoms (mma.sync m16n8k16 with fp32 accumulators,
// ldmatrix, cp.async), which also run on sm_90. Included only by tree_attention_hdim<D>.cu.
//
// Work unit (one CTA of 4 warps): request b, kv head h, a block of packed rows and one KV split.
// A packed row is (query i, head-in-group g) -> q head h * group + g, so the GQA heads that share a kv
// head and the request's tree queries fill the MMA M dimension together. The request's KV range
// [0, prefix + n) is cut into num_splits tile-aligned chunks (flash-decoding); partial states (O / l,
// log2-sum-exp) are merged by merge_kernel. Inside a chunk, 64-token K/V tiles are gathered through
// the page table with 16-byte cp.async into a 3-stage, XOR-swizzled shared-memory ring. Tiles before
// the prefix end run unmasked; only the last tiles read the compact ancestor bits (or the causal rule).
// Online softmax in the log2 domain (scale folded into log2(e)), P re-used from registers as the A
// operand of P·V (FlashAttention-2 register layout).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>

#include "ssdk/tree_attention.cuh"

namespace ssdk::tree_attn {

template <typename T> struct Mma;
template <> struct Mma<__nv_bfloat16> { using Atom = cute::SM80_16x8x16_F32BF16BF16F32_TN; };
template <> struct Mma<__half> { using Atom = cute::SM80_16x8x16_F32F16F16F32_TN; };

template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ float ex2(float x) {  // 2^x; ex2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// D accumulates A(16x16) * B(16x8): a[4] row-major A fragment, b0/b1 the B fragment, d[4] fp32.
template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Mma<T>::Atom::fma(d[0], d[1], d[2], d[3], a[0], a[1], a[2], a[3], b0, b1, d[0], d[1], d[2], d[3]);
}

__device__ __forceinline__ void ldsm(const void* smem, uint32_t (&r)[4]) {
  cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(smem), r[0], r[1], r[2], r[3]);
}
__device__ __forceinline__ void ldsm_t(const void* smem, uint32_t (&r)[4]) {
  cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(smem), r[0], r[1], r[2], r[3]);
}

// 16 bytes global -> shared, zero-filled when !pred (the source is then not read).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(*reinterpret_cast<const cute::uint128_t*>(gmem),
                                                              *reinterpret_cast<cute::uint128_t*>(smem), pred);
}

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][D] tile: chunks XOR-swizzled with
// row % 8 so that the 8 row addresses of an ldmatrix hit 8 different bank groups.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

template <typename T, int D, TileShape kShape>
struct Config {
  static constexpr int kWarpsM = kShape == TileShape::kNarrow ? 1 : 4;
  static constexpr int kWarpsN = 4 / kWarpsM;
  static constexpr int kBlockM = 16 * kWarpsM;
  static constexpr int kWarpN = kBlockN / kWarpsN;  // KV columns of a tile owned by one warp
  static constexpr int kStages = 3;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr int kTileElems = kBlockN * D;
  static constexpr int kSmemQ = kBlockM * D * int(sizeof(T));
  static constexpr int kSmemKV = kStages * 2 * kTileElems * int(sizeof(T));
  static constexpr int kEpiRows = kWarpsN * kBlockM;  // one (m, l, O) state per warp-row
  static constexpr int kOStride = D + 8;              // fp32 epilogue row stride (fewer bank conflicts)
  static constexpr int kSmemEpi = kEpiRows * (kOStride + 2) * 4;
  static constexpr int kSmem = kSmemQ + (kSmemKV > kSmemEpi ? kSmemKV : kSmemEpi);
  static_assert(kThreads % kChunks == 0 && (kBlockN * kChunks) % kThreads == 0);
  static_assert(kWarpN % 16 == 0 && D % 16 == 0);
};

template <typename T, int D, TileShape kShape>
__global__ void __launch_bounds__(kThreads) tree_attention_kernel(const Params p) {
  using Cfg = Config<T, D, kShape>;
  constexpr int kBlockM = Cfg::kBlockM, kWarpN = Cfg::kWarpN, kStages = Cfg::kStages, kChunks = Cfg::kChunks;
  constexpr float kNegInf = -__builtin_huge_valf();

  const int m_tile = blockIdx.x % p.m_tiles, split = blockIdx.x / p.m_tiles;
  const int kv_head = blockIdx.y, b = blockIdx.z;
  const int q_start = p.qo_indptr[b];
  const int n = p.qo_indptr[b + 1] - q_start;
  const int rows = n * p.group, row0 = m_tile * kBlockM;
  if (row0 >= rows) return;
  const int prefix = p.prefix_lens[b], kv_len = prefix + n;
  const int tiles_per_split = ((kv_len + kBlockN - 1) / kBlockN + p.num_splits - 1) / p.num_splits;
  const int kv_begin = split * tiles_per_split * kBlockN;
  const int kv_end = min(kv_len, kv_begin + tiles_per_split * kBlockN);
  const int num_tiles = kv_end > kv_begin ? (kv_end - kv_begin + kBlockN - 1) / kBlockN : 0;

  extern __shared__ __align__(128) uint8_t smem[];
  T* s_q = reinterpret_cast<T*>(smem);
  T* s_k = reinterpret_cast<T*>(smem + Cfg::kSmemQ);  // [kStages][kBlockN][D]
  T* s_v = s_k + kStages * Cfg::kTileElems;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp % Cfg::kWarpsM, wn = warp / Cfg::kWarpsM;

  // Q rows -> shared (zero rows past the request), in the same cp.async group as KV tile 0.
  const T* q = static_cast<const T*>(p.q);
  for (int c = tid; c < kBlockM * kChunks; c += kThreads) {
    const int r = c / kChunks, chunk = c % kChunks, row = row0 + r;
    const bool ok = row < rows;
    const T* src = q;
    if (ok) {
      const int qi = row / p.group, head = kv_head * p.group + row % p.group;
      src = q + (q_start + qi) * p.q_stride_n + head * p.q_stride_h + chunk * 8;
    }
    cp_async16(s_q + swz<D>(r, chunk), src, ok);
  }

  // One 64-token K/V tile through the page table. Thread tid always copies chunk tid % kChunks of
  // rows tid / kChunks + i * (kThreads / kChunks).
  const T* k_head = static_cast<const T*>(p.k_cache) + kv_head * p.k_stride_head;
  const T* v_head = static_cast<const T*>(p.v_cache) + kv_head * p.v_stride_head;
  const int32_t* page_table = p.block_tables + b * p.block_table_stride;
  auto load_tile = [&](int tile, int stage) {
    const int pos0 = kv_begin + tile * kBlockN, chunk = tid % kChunks;
    T* dst_k = s_k + stage * Cfg::kTileElems;
    T* dst_v = s_v + stage * Cfg::kTileElems;
#pragma unroll
    for (int i = 0; i < kBlockN * kChunks / kThreads; ++i) {
      const int r = tid / kChunks + i * (kThreads / kChunks), pos = pos0 + r;
      const bool ok = pos < kv_end;
      const T* src_k = k_head;
      const T* src_v = v_head;
      if (ok) {
        const int64_t page = __ldg(page_table + pos / p.page_size), slot = pos % p.page_size;
        src_k = k_head + page * p.k_stride_page + slot * p.k_stride_tok + chunk * 8;
        src_v = v_head + page * p.v_stride_page + slot * p.v_stride_tok + chunk * 8;
      }
      cp_async16(dst_k + swz<D>(r, chunk), src_k, ok);
      cp_async16(dst_v + swz<D>(r, chunk), src_v, ok);
    }
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) load_tile(s, s);
    cute::cp_async_fence();
  }

  // Per-thread rows: g and g + 8 of this warp's 16 (MMA accumulator layout).
  const int g = lane >> 2, t4 = lane & 3;
  int row_qi[2];
  const int32_t* row_mask[2];
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int row = row0 + wm * 16 + g + 8 * hr;
    row_qi[hr] = row < rows ? row / p.group : -1;  // -1: padding row, sees only the prefix
    row_mask[hr] = p.tree_mask != nullptr && row < rows ? p.tree_mask + (q_start + row_qi[hr]) * p.mask_stride
                                                        : nullptr;
  }

  uint32_t q_frag[D / 16][4];
  float o[D / 8][4];
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;

  for (int tile = 0; tile < num_tiles; ++tile) {
    cute::cp_async_wait<kStages - 2>();
    __syncthreads();
    if (tile == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ldsm(s_q + swz<D>(wm * 16 + (lane & 15), kk * 2 + (lane >> 4)), q_frag[kk]);
    }
    if (tile + kStages - 1 < num_tiles) load_tile(tile + kStages - 1, (tile + kStages - 1) % kStages);
    cute::cp_async_fence();

    const T* tk = s_k + (tile % kStages) * Cfg::kTileElems;
    const T* tv = s_v + (tile % kStages) * Cfg::kTileElems;
    const int col0 = wn * kWarpN;  // this warp's first column in the tile

    // S = Q K^T for this warp's 16 rows x kWarpN columns.
    float s[kWarpN / 8][4];
#pragma unroll
    for (int i = 0; i < kWarpN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kWarpN / 16; ++np) {
        uint32_t kb[4];
        ldsm(tk + swz<D>(col0 + np * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)), kb);
        mma<T>(s[2 * np], q_frag[kk], kb[0], kb[1]);
        mma<T>(s[2 * np + 1], q_frag[kk], kb[2], kb[3]);
      }
    }

    // Scale into the log2 domain; mask the tiles that reach the new tokens or the chunk end.
    const int pos0 = kv_begin + tile * kBlockN;
    const bool masked = pos0 + kBlockN > prefix;
#pragma unroll
    for (int nf = 0; nf < kWarpN / 8; ++nf) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nf][e] *= p.scale_log2;
        if (masked) {
          const int hr = e >> 1, pos = pos0 + col0 + nf * 8 + 2 * t4 + (e & 1), j = pos - prefix;
          bool visible = pos < kv_end;
          if (visible && j >= 0) {
            if (row_qi[hr] < 0) visible = false;
            else if (row_mask[hr] != nullptr) visible = (__ldg(row_mask[hr] + (j >> 5)) >> (j & 31)) & 1;
            else visible = j <= row_qi[hr];
          }
          if (!visible) s[nf][e] = kNegInf;
        }
      }
    }

    // Online softmax over this warp's columns (a row's 4 owners are lanes 4g .. 4g + 3).
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float mx = m[hr];
#pragma unroll
      for (int nf = 0; nf < kWarpN / 8; ++nf) mx = fmaxf(mx, fmaxf(s[nf][2 * hr], s[nf][2 * hr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float base = mx == kNegInf ? 0.f : mx;
      const float alpha = ex2(m[hr] - base);
      m[hr] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nf = 0; nf < kWarpN / 8; ++nf) {
        s[nf][2 * hr] = ex2(s[nf][2 * hr] - base);
        s[nf][2 * hr + 1] = ex2(s[nf][2 * hr + 1] - base);
        sum += s[nf][2 * hr] + s[nf][2 * hr + 1];
      }
      l[hr] = l[hr] * alpha + sum;
#pragma unroll
      for (int df = 0; df < D / 8; ++df) {
        o[df][2 * hr] *= alpha;
        o[df][2 * hr + 1] *= alpha;
      }
    }

    // O += P V: P's accumulator layout is the A-operand layout of the next MMA (16 columns per step).
#pragma unroll
    for (int kc = 0; kc < kWarpN / 16; ++kc) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kc][0], s[2 * kc][1]), pack2<T>(s[2 * kc][2], s[2 * kc][3]),
                              pack2<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                              pack2<T>(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];
        ldsm_t(tv + swz<D>(col0 + kc * 16 + (lane & 7) + (((lane >> 3) & 1) << 3), dp * 2 + (lane >> 4)), vb);
        mma<T>(o[2 * dp], pa, vb[0], vb[1]);
        mma<T>(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
  }

  // Epilogue: every warp parks (m, l, O) in shared memory (over the KV ring), then the CTA merges the
  // kWarpsN states of each row and writes coalesced rows.
  cute::cp_async_wait<0>();
  __syncthreads();
  float* s_o = reinterpret_cast<float*>(smem + Cfg::kSmemQ);  // [kEpiRows][kOStride]
  float* s_m = s_o + Cfg::kEpiRows * Cfg::kOStride;
  float* s_l = s_m + Cfg::kEpiRows;
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 1);
    l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 2);
    const int r = wn * kBlockM + wm * 16 + g + 8 * hr;
    if (t4 == 0) {
      s_m[r] = m[hr];
      s_l[r] = l[hr];
    }
#pragma unroll
    for (int df = 0; df < D / 8; ++df)
      *reinterpret_cast<float2*>(s_o + r * Cfg::kOStride + df * 8 + 2 * t4) = make_float2(o[df][2 * hr], o[df][2 * hr + 1]);
  }
  __syncthreads();

  for (int e = tid; e < kBlockM * (D / 4); e += kThreads) {
    const int r = e / (D / 4), c4 = e % (D / 4), row = row0 + r;
    if (row >= rows) break;  // rows grow with e
    float mx = kNegInf;
#pragma unroll
    for (int w = 0; w < Cfg::kWarpsN; ++w) mx = fmaxf(mx, s_m[w * kBlockM + r]);
    const float base = mx == kNegInf ? 0.f : mx;
    float sum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < Cfg::kWarpsN; ++w) {
      const float scale = ex2(s_m[w * kBlockM + r] - base);
      sum += scale * s_l[w * kBlockM + r];
      const float4 v = *reinterpret_cast<const float4*>(s_o + (w * kBlockM + r) * Cfg::kOStride + c4 * 4);
      acc.x += scale * v.x, acc.y += scale * v.y, acc.z += scale * v.z, acc.w += scale * v.w;
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    acc.x *= inv, acc.y *= inv, acc.z *= inv, acc.w *= inv;
    const float lse2 = sum > 0.f ? mx + log2f(sum) : kNegInf;
    const int token = q_start + row / p.group, head = kv_head * p.group + row % p.group;
    if (p.num_splits == 1) {
      T* dst = static_cast<T*>(p.out) + token * p.out_stride_n + head * p.out_stride_h + c4 * 4;
      *reinterpret_cast<uint2*>(dst) = make_uint2(pack2<T>(acc.x, acc.y), pack2<T>(acc.z, acc.w));
      if (c4 == 0 && p.lse != nullptr) p.lse[int64_t(token) * p.num_qo_heads + head] = lse2 * 0.6931471805599453f;
    } else {
      const int64_t idx = (int64_t(split) * p.n_total + token) * p.num_qo_heads + head;
      *reinterpret_cast<float4*>(p.partial_o + idx * D + c4 * 4) = acc;
      if (c4 == 0) p.partial_lse[idx] = lse2;
    }
  }
}

// Merges the num_splits partial states of every computed row: D / 4 threads per (token, head) row.
// Grid: (row blocks, batch), mirroring the attention grid so rows no CTA computed stay untouched.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) merge_kernel(const Params p) {
  constexpr int kRowThreads = D / 4, kRowsPerBlock = kThreads / kRowThreads;
  constexpr float kNegInf = -__builtin_huge_valf();
  const int b = blockIdx.y, q_start = p.qo_indptr[b];
  const int n = min(p.qo_indptr[b + 1] - q_start, p.max_q_len);
  const int r = blockIdx.x * kRowsPerBlock + threadIdx.x / kRowThreads, c4 = threadIdx.x % kRowThreads;
  if (r >= n * p.num_qo_heads) return;
  const int token = q_start + r / p.num_qo_heads, head = r % p.num_qo_heads;
  const int64_t row = int64_t(token) * p.num_qo_heads + head, split_stride = int64_t(p.n_total) * p.num_qo_heads;
  float mx = kNegInf;
  for (int s = 0; s < p.num_splits; ++s) mx = fmaxf(mx, p.partial_lse[s * split_stride + row]);
  const float base = mx == kNegInf ? 0.f : mx;
  float sum = 0.f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int s = 0; s < p.num_splits; ++s) {
    const float lse = p.partial_lse[s * split_stride + row];
    if (lse == kNegInf) continue;
    const float scale = ex2(lse - base);
    sum += scale;
    const float4 v = *reinterpret_cast<const float4*>(p.partial_o + (s * split_stride + row) * D + c4 * 4);
    acc.x += scale * v.x, acc.y += scale * v.y, acc.z += scale * v.z, acc.w += scale * v.w;
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  T* dst = static_cast<T*>(p.out) + token * p.out_stride_n + head * p.out_stride_h + c4 * 4;
  *reinterpret_cast<uint2*>(dst) = make_uint2(pack2<T>(acc.x * inv, acc.y * inv), pack2<T>(acc.z * inv, acc.w * inv));
  if (c4 == 0 && p.lse != nullptr)
    p.lse[row] = sum > 0.f ? (mx + log2f(sum)) * 0.6931471805599453f : kNegInf;
}

template <typename T, int D, TileShape kShape>
cudaError_t launch_shape(const Params& p, cudaStream_t stream) {
  using Cfg = Config<T, D, kShape>;
  auto kernel = tree_attention_kernel<T, D, kShape>;
  if (Cfg::kSmem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmem);
    if (err != cudaSuccess) return err;
  }
  kernel<<<dim3(p.m_tiles * p.num_splits, p.num_kv_heads, p.batch), kThreads, Cfg::kSmem, stream>>>(p);
  if (p.num_splits > 1) {
    constexpr int kRowsPerBlock = kThreads / (D / 4);
    const int blocks = (p.max_q_len * p.num_qo_heads + kRowsPerBlock - 1) / kRowsPerBlock;
    merge_kernel<T, D><<<dim3(blocks, p.batch), kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t launch(const Params& p, TileShape shape, cudaStream_t stream) {
  return shape == TileShape::kNarrow ? launch_shape<T, D, TileShape::kNarrow>(p, stream)
                                     : launch_shape<T, D, TileShape::kWide>(p, stream);
}

}  // namespace ssdk::tree_attn
