// Tree attention kernel on tensor cores: on sm_90a the 64- and 128-row tiles run Hopper's warpgroup MMA
// (CuTe's SM90 GMMA atoms: S = Q K^T with both operands in shared memory, O += P V with P from registers),
// the other tiles and other archs CuTe's SM80 atoms (mma.sync m16n8k16, ldmatrix); fp32 accumulators,
// cp.async copies, sm_90 thread-block clusters and programmatic dependent launch.
// Included only by tree_attention_hdim<D>.cu.
//
// Work unit (one CTA): request b, kv head h, a block of BLOCK_M packed rows and one KV split. A packed
// row is (query i, head-in-group g) -> q head h * group + g, so the GQA heads that share a kv head and
// the request's tree queries fill the MMA M dimension together and each K/V tile is read once per row
// block. The request's KV range [0, prefix + n) is cut into num_splits tile-aligned chunks
// (flash-decoding); the num_splits CTAs of a row block form one cluster and merge their softmax states
// through distributed shared memory, so a call is one kernel with no workspace and no merge launch.
// Inside a chunk, 64-token K/V tiles are gathered through the page table with 16-byte cp.async into a
// 3-stage ring in wgmma's 128-byte-swizzled layout (tile_offset); the page ids of a tile are loaded one
// iteration before its copies are issued. Tiles before the prefix end run unmasked; only tiles that reach
// the new tokens read the compact ancestor bits (word 0 of each row is prefetched) or apply the causal
// rule. Online softmax in the log2 domain (scale folded into log2(e)), P re-used from registers as the A
// operand of P·V (FlashAttention-2 register layout).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm80.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>

#include <utility>

#include "ssdk/common.cuh"
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

// Thread-block cluster primitives (sm_90, the extension's target; compiled for an older target they
// reduce to a CTA barrier and local shared-memory loads, right for the one-split launches it gets).
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
  __syncthreads();
#endif
}
// Address of this CTA's shared-memory object `smem` in CTA `rank` of the cluster.
__device__ __forceinline__ uint32_t cluster_addr(const void* smem, uint32_t rank) {
  uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mapa.shared::cluster.u32 %0, %0, %1;" : "+r"(addr) : "r"(rank));
#endif
  return addr;
}
__device__ __forceinline__ float cluster_load(uint32_t addr) {
  float v;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
#else
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
#endif
  return v;
}
__device__ __forceinline__ float4 cluster_load4(uint32_t addr) {
  float4 v;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(addr) : "memory");
#else
  asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(addr) : "memory");
#endif
  return v;
}

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][D] tile: chunks XOR-swizzled with
// row % 8 so that the 8 row addresses of an ldmatrix hit 8 different bank groups.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// Natural-log lse of a softmax state kept in the log2 domain (max m, sum of 2^(x - m)); -inf when empty.
__device__ __forceinline__ float natural_lse(float m, float sum) {
  return sum > 0.f ? (m + log2f(sum)) * 0.6931471805599453f : -__builtin_huge_valf();
}

// Element offset of 16-byte chunk `chunk` of row `row` in a [kRows][D] tile, in the layout wgmma reads
// (GMMA 128-byte swizzle): 64-column halves one after the other, each kRows rows of 128 bytes with the
// chunk XOR-ed with row % 8 (an ldmatrix's 8 row addresses also hit 8 different bank groups). Tiles
// start 1024-byte aligned. For D = 64 this is swz<64>.
template <int kRows>
__device__ __forceinline__ int tile_offset(int row, int chunk) {
  return ((chunk >> 3) * kRows + row) * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

// Set in the sm_90a device pass only: Config::kWgmma picks the device code's MMA path and nothing the host
// reads (shared-memory size, threads) depends on it.
#if defined(CUTE_ARCH_MMA_SM90A_ENABLED)
constexpr bool kHasWgmma = true;
#else
constexpr bool kHasWgmma = false;
#endif

// wgmma shared-memory descriptor of a 128-byte-swizzled operand tile at `smem` (1024-byte aligned atoms):
// lbo / sbo are the byte strides between 64-element column halves (MN-major only) and between 8-row
// groups; see make_gmma_desc in CuTe's mma_traits_sm90_gmma.hpp for the canonical forms.
__device__ __forceinline__ uint64_t gmma_desc(const void* smem, uint32_t lbo, uint32_t sbo) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  return uint64_t((addr & 0x3FFFF) >> 4) | uint64_t(lbo >> 4) << 16 | uint64_t(sbo >> 4) << 32 | uint64_t(1) << 62;
}

// One warpgroup's MMAs of a tile (m64, k16 steps): S[64 x 64] (+)= Q K^T with Q and K K-major in shared
// memory; O[64 x D] += P V with P's 16 x 16 fragments in registers (the mma.sync A layout per warp) and V
// MN-major in shared memory. The accumulators are the mma.sync C layout per warp: acc[i][4] holds rows
// g, g + 8 and columns 8i + 2 t4 (+1).
template <typename T, int D> struct Wgmma;
template <int D> struct Wgmma<__nv_bfloat16, D> {
  using QK = cute::SM90::GMMA::MMA_64x64x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>;
  using PV = std::conditional_t<
      D == 64, cute::SM90::GMMA::MMA_64x64x16_F32BF16BF16_RS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::MN>,
      cute::SM90::GMMA::MMA_64x128x16_F32BF16BF16_RS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::MN>>;
};
template <int D> struct Wgmma<__half, D> {
  using QK = cute::SM90::GMMA::MMA_64x64x16_F32F16F16_SS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>;
  using PV = std::conditional_t<
      D == 64, cute::SM90::GMMA::MMA_64x64x16_F32F16F16_RS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::MN>,
      cute::SM90::GMMA::MMA_64x128x16_F32F16F16_RS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::MN>>;
};
template <class Atom, size_t... I>
__device__ __forceinline__ void wgmma_ss(uint64_t a, uint64_t b, float* d, bool accumulate, std::index_sequence<I...>) {
  Atom::fma(a, b, d[I]..., accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}
template <class Atom, size_t... I>
__device__ __forceinline__ void wgmma_rs(const uint32_t (&a)[4], uint64_t b, float* d, std::index_sequence<I...>) {
  Atom::fma(a[0], a[1], a[2], a[3], b, d[I]...);
}
// Keeps the compiler from moving accesses to accumulator registers across wgmma issue / wait points.
template <int N>
__device__ __forceinline__ void fence_registers(float (&acc)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) asm volatile("" : "+f"(acc[i][j])::"memory");
}

template <typename T, int D, TileShape kShape>
struct Config {
  static constexpr int kBlockM = block_m(kShape);
  static constexpr int kWarpsM = kBlockM / 16;
  static constexpr int kWarpsN = kWarpsM >= 4 ? 1 : 4 / kWarpsM;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpN = kBlockN / kWarpsN;  // KV columns of a tile owned by one warp
  // Whole warpgroups of 64 rows each run wgmma (where compiled for sm_90a); narrower tiles split a KV
  // tile's columns between warps and stay on mma.sync.
  static constexpr bool kWgmma = kWarpsN == 1 && kWarpsM % 4 == 0 && kHasWgmma;
  static constexpr int kStages = 3;  // K/V ring; copies run kStages - 1 tiles ahead
  static constexpr int kChunks = D / 8;                      // 16-byte chunks per row
  // K/V copies: kThreadsPerRow threads per tile row, kCopyChunks 16-byte chunks each (chunks t, t +
  // kThreadsPerRow, ...: one copy instruction of a row's threads covers contiguous bytes, whole 32-byte
  // sectors), so a thread resolves one page id and one row address per tile.
  static constexpr int kThreadsPerRow = kThreads / kBlockN;
  static constexpr int kCopyChunks = kChunks / kThreadsPerRow;
  static constexpr int kTileElems = kBlockN * D;
  static constexpr int kSmemQ = kBlockM * D * int(sizeof(T));
  static constexpr int kSmemKV = kStages * 2 * kTileElems * int(sizeof(T));
  static constexpr int kEpiRows = kWarpsN * kBlockM;  // one (m, l, O) state per warp-row
  static constexpr int kOStride = D + 8;              // fp32 epilogue row stride (fewer bank conflicts)
  static constexpr int kSmemEpi = kEpiRows * (kOStride + 2) * 4;
  static constexpr int kSmem = kSmemQ + (kSmemKV > kSmemEpi ? kSmemKV : kSmemEpi);
  // Two CTAs per SM where registers allow (D = 128 with 8 warps needs more than 128 per thread).
  static constexpr int kMinBlocks = kThreads == 256 && D == 128 ? 1 : 2;
  static_assert(kThreads % kBlockN == 0 && kChunks % kThreadsPerRow == 0 && 8 % kThreadsPerRow == 0);
  static_assert(kWarpN % 16 == 0 && D % 16 == 0);
};

template <typename T, int D, TileShape kShape>
__global__ void __launch_bounds__(Config<T, D, kShape>::kThreads, Config<T, D, kShape>::kMinBlocks)
    tree_attention_kernel(const __grid_constant__ Params p) {
  using Cfg = Config<T, D, kShape>;
  constexpr int kBlockM = Cfg::kBlockM, kWarpN = Cfg::kWarpN, kStages = Cfg::kStages, kChunks = Cfg::kChunks;
  constexpr int kAhead = kStages - 1;  // tiles in flight ahead of the one being read
  constexpr int kThreads = Cfg::kThreads, kCopyChunks = Cfg::kCopyChunks;
  constexpr float kNegInf = -__builtin_huge_valf();

  // The num_splits CTAs of one row block are consecutive in x and form one cluster.
  const int split = blockIdx.x % p.num_splits, m_tile = blockIdx.x / p.num_splits;
  const int kv_head = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp % Cfg::kWarpsM, wn = warp / Cfg::kWarpsM;

  pdl_wait();  // q, the cache and the index tensors may be written by the previous kernel
  const int q_start = p.qo_indptr[b], q_end = p.qo_indptr[b + 1], prefix = p.prefix_lens[b];  // in parallel
  const int n = q_end - q_start, rows = n * p.group, row0 = m_tile * kBlockM;
  if (row0 >= rows) return;  // the whole cluster: its CTAs share (b, kv_head, m_tile)
  // Causal rows of this block see new tokens up to their last query only; tree rows may see any.
  const int kv_len = prefix + (p.tree_mask != nullptr ? n : min(n, (row0 + kBlockM - 1) / p.group + 1));
  const int tiles_per_split = ((kv_len + kBlockN - 1) / kBlockN + p.num_splits - 1) / p.num_splits;
  const int kv_begin = split * tiles_per_split * kBlockN;
  const int kv_end = min(kv_len, kv_begin + tiles_per_split * kBlockN);
  const int num_tiles = kv_end > kv_begin ? (kv_end - kv_begin + kBlockN - 1) / kBlockN : 0;

  extern __shared__ __align__(1024) uint8_t smem[];  // Q and every ring stage: whole 1024-byte swizzle atoms
  T* s_q = reinterpret_cast<T*>(smem);
  T* s_k = reinterpret_cast<T*>(smem + Cfg::kSmemQ);  // [kStages][kBlockN][D]
  T* s_v = s_k + kStages * Cfg::kTileElems;

  // Packed row -> (token, q head) of q, out and lse.
  auto token_of = [&](int row) { return q_start + row / p.group; };
  auto head_of = [&](int row) { return kv_head * p.group + row % p.group; };

  // Q rows -> shared (zero rows past the request), in the same cp.async group as KV tile 0.
  const T* q = static_cast<const T*>(p.q);
  for (int c = tid; c < kBlockM * kChunks; c += kThreads) {
    const int r = c / kChunks, chunk = c % kChunks, row = row0 + r;
    const bool ok = row < rows;
    const T* src = ok ? q + token_of(row) * p.q_stride_n + head_of(row) * p.q_stride_h + chunk * 8 : q;
    cp_async16(s_q + tile_offset<kBlockM>(r, chunk), src, ok);
  }

  // K/V tiles through the page table: thread tid copies chunks chunk0 + c * kThreadsPerRow of tile row
  // tid / kThreadsPerRow; page id -1 = past the chunk end (zero-filled, not read). What does not change
  // with the tile is computed here, so a tile costs one page-id load, one slot and one IMAD.WIDE per K
  // and V row address (strides fit 32 bits, checked on the host), then the copies at immediate offsets;
  // chunk0 < kThreadsPerRow (a power of two dividing 8), so copy c's slot is the first one's with the
  // chunk bits ^ (c * kThreadsPerRow) % 8 in its 64-column half (c * kThreadsPerRow) / 8.
  constexpr int kChunkStep = Cfg::kThreadsPerRow * 8;  // elements between a thread's chunks
  const int copy_row = tid / Cfg::kThreadsPerRow, chunk0 = tid % Cfg::kThreadsPerRow;
  const T* k_row = static_cast<const T*>(p.k_cache) + kv_head * p.k_stride_head + chunk0 * 8;
  const T* v_row = static_cast<const T*>(p.v_cache) + kv_head * p.v_stride_head + chunk0 * 8;
  const uint32_t k_stride_page = uint32_t(p.k_stride_page), k_stride_tok = uint32_t(p.k_stride_tok);
  const uint32_t v_stride_page = uint32_t(p.v_stride_page), v_stride_tok = uint32_t(p.v_stride_tok);
  const int32_t* page_table = p.block_tables + b * p.block_table_stride;
  const int copy_dst = tile_offset<kBlockN>(copy_row, chunk0);
  auto copy_slot = [&](int c) {  // c is a compile-time constant in the unrolled copy loop
    return (copy_dst ^ (((c * Cfg::kThreadsPerRow) & 7) << 3)) + ((c * Cfg::kThreadsPerRow) >> 3) * kBlockN * 64;
  };
  auto fetch_page = [&](int tile) {
    const int pos = kv_begin + tile * kBlockN + copy_row;
    return tile < num_tiles && pos < kv_end ? __ldg(page_table + p.page_index(pos)) : -1;
  };
  auto issue_tile = [&](int tile, int stage, int page) {
    const bool ok = page >= 0;
    const uint32_t slot = ok ? p.page_slot(kv_begin + tile * kBlockN + copy_row) : 0u, pg = ok ? page : 0u;
    const T* src_k = k_row + (uint64_t(pg) * k_stride_page + slot * k_stride_tok);
    const T* src_v = v_row + (uint64_t(pg) * v_stride_page + slot * v_stride_tok);
    T* dst_k = s_k + stage * Cfg::kTileElems;
    T* dst_v = s_v + stage * Cfg::kTileElems;
#pragma unroll
    for (int c = 0; c < kCopyChunks; ++c) {
      cp_async16(dst_k + copy_slot(c), src_k + c * kChunkStep, ok);
      cp_async16(dst_v + copy_slot(c), src_v + c * kChunkStep, ok);
    }
  };

  // Page ids of the first kAhead tiles in one round trip, then their copies.
  int pages[kAhead];
#pragma unroll
  for (int s = 0; s < kAhead; ++s) pages[s] = fetch_page(s);

  // Per-thread rows: g and g + 8 of this warp's 16 (MMA accumulator layout). Word 0 of each row's
  // ancestor bits (new tokens 0..31) is loaded now, with the page ids, if this split reaches them.
  const int g = lane >> 2, t4 = lane & 3;
  // Warps (warpgroups on the wgmma path) whose rows are all padding skip the math.
  const bool active = row0 + (Cfg::kWgmma ? wm & ~3 : wm) * 16 < rows;
  int row_qi[2];  // query index of the thread's rows, -1 for padding rows (they see only the prefix)
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int row = row0 + wm * 16 + g + 8 * hr;
    row_qi[hr] = row < rows ? row / p.group : -1;
  }
  // Ancestor bits of a row (recomputed where used: two 64-bit pointers kept across the KV loop pushed the
  // 8-warp D = 64 tile past its 128-register bound).
  const bool tree = p.tree_mask != nullptr;
  auto row_mask = [&](int hr) { return p.tree_mask + int64_t(q_start + row_qi[hr]) * p.mask_stride; };
  uint32_t mask0[2];
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) mask0[hr] = tree && row_qi[hr] >= 0 && kv_end > prefix ? __ldg(row_mask(hr)) : 0u;

#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < num_tiles) issue_tile(s, s, pages[s]);
    cute::cp_async_fence();
  }
  int next_page = fetch_page(kAhead);

  // -inf for the scores of tile-local columns this warp's rows may not see: past the chunk end, past a
  // causal row's own token, or outside a tree row's ancestor bits (prefix columns are always visible).
  // Per row, the ancestor words that cover the warp's kWarpN columns are loaded once per tile and
  // funnel-shifted into one 64-bit window aligned to this thread's first column, so each score tests a
  // bit at a compile-time offset.
  constexpr int kMaskWords = (kWarpN + 31) / 32 + 1;
  static_assert(kWarpN <= 64, "one 64-bit window of ancestor bits per row and tile");
  const int col0 = wn * kWarpN;  // this warp's first column in a tile
  auto mask_tile = [&](float (&s)[kWarpN / 8][4], int pos0) {
    const int j_first = pos0 + col0 - prefix;  // new-token index of the warp's first column (< 0: prefix)
    const int j_thread = j_first + 2 * t4;     // ... of this thread's first column
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      uint32_t words[kMaskWords];
#pragma unroll
      for (int k = 0; k < kMaskWords; ++k) {
        const int w = (j_first >> 5) + k;  // floor division: negative words cover the prefix
        words[k] = !tree || row_qi[hr] < 0 || w < 0 || w * 32 >= n ? 0u
                   : w == 0                                          ? mask0[hr]
                                                                     : uint32_t(__ldg(row_mask(hr) + w));
      }
      const int shift = j_first & 31;
      const uint32_t lo = __funnelshift_r(words[0], words[1], shift);
      // A thread tests bits 2 t4 .. 2 t4 + kWarpN - 1 < 6 + kWarpN of the window: 16-column warps need no
      // hi word.
      const uint32_t hi = kWarpN + 6 <= 32  ? 0u
                          : kMaskWords > 2 ? __funnelshift_r(words[1], words[kMaskWords - 1], shift)
                                           : words[1] >> shift;
      const uint64_t window = ((uint64_t(hi) << 32) | lo) >> (2 * t4);  // bit c: new token j_thread + c
#pragma unroll
      for (int nf = 0; nf < kWarpN / 8; ++nf) {
#pragma unroll
        for (int odd = 0; odd < 2; ++odd) {
          const int c = nf * 8 + odd, j = j_thread + c;
          const bool seen = tree ? ((window >> c) & 1u) != 0 : j <= row_qi[hr];
          const bool visible = pos0 + col0 + 2 * t4 + c < kv_end && (j < 0 || (row_qi[hr] >= 0 && seen));
          if (!visible) s[nf][2 * hr + odd] = kNegInf;
        }
      }
    }
  };

  float o[D / 8][4];
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;

  // Ring bookkeeping: wait for `tile`, then (after the barrier that retires every warp's reads of the
  // slot it reuses) copy tile + kAhead and fetch the page ids of the tile after it.
  int read_stage = 0, write_stage = kAhead;
  auto advance_ring = [&](int tile) {
    cute::cp_async_wait<kAhead - 1>();
    __syncthreads();
    if (tile + kAhead < num_tiles) issue_tile(tile + kAhead, write_stage, next_page);
    cute::cp_async_fence();
    next_page = fetch_page(tile + kAhead + 1);  // consumed by the next iteration's copies
    const int stage = read_stage;
    read_stage = read_stage == kStages - 1 ? 0 : read_stage + 1;
    write_stage = write_stage == kStages - 1 ? 0 : write_stage + 1;
    return stage;
  };

  // Scores stay raw (the scale is folded into the exponent); only a tile that reaches the new tokens or
  // the chunk end is masked, in its own branch, so the prefix tiles run no mask code. Then the online
  // softmax over this warp's columns (a row's 4 owners are lanes 4g .. 4g + 3), log2 domain: p = 2^(s *
  // scale - m) in one FFMA per score; scale > 0, so the raw maximum gives the scaled one. alpha: each
  // row's rescale factor for O.
  auto softmax_tile = [&](float (&s)[kWarpN / 8][4], int tile, float (&alpha)[2]) {
    const int pos0 = kv_begin + tile * kBlockN;
    if (pos0 + kBlockN > prefix) mask_tile(s, pos0);
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float mx_even = kNegInf, mx_odd = kNegInf;  // two chains: half the dependent FMNMX depth
#pragma unroll
      for (int nf = 0; nf < kWarpN / 8; nf += 2) {
        mx_even = fmaxf(mx_even, fmaxf(s[nf][2 * hr], s[nf][2 * hr + 1]));
        mx_odd = fmaxf(mx_odd, fmaxf(s[nf + 1][2 * hr], s[nf + 1][2 * hr + 1]));
      }
      float mx = fmaxf(mx_even, mx_odd);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      mx = fmaxf(m[hr], mx * p.scale_log2);
      const float base = mx == kNegInf ? 0.f : mx;
      alpha[hr] = ex2(m[hr] - base);
      m[hr] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nf = 0; nf < kWarpN / 8; ++nf) {
        s[nf][2 * hr] = ex2(fmaf(s[nf][2 * hr], p.scale_log2, -base));
        s[nf][2 * hr + 1] = ex2(fmaf(s[nf][2 * hr + 1], p.scale_log2, -base));
        sum += s[nf][2 * hr] + s[nf][2 * hr + 1];
      }
      l[hr] = l[hr] * alpha[hr] + sum;
    }
  };
  auto rescale_o = [&](const float (&alpha)[2]) {
#pragma unroll
    for (int df = 0; df < D / 8; ++df) {
      o[df][0] *= alpha[0], o[df][1] *= alpha[0];
      o[df][2] *= alpha[1], o[df][3] *= alpha[1];
    }
  };
  // P's accumulator layout is the A-operand layout of the P V MMA (16 columns per k-step).
  auto pack_p = [&](const float (&s)[kWarpN / 8][4], uint32_t (&pa)[kWarpN / 16][4]) {
#pragma unroll
    for (int kc = 0; kc < kWarpN / 16; ++kc) {
      pa[kc][0] = pack2<T>(s[2 * kc][0], s[2 * kc][1]);
      pa[kc][1] = pack2<T>(s[2 * kc][2], s[2 * kc][3]);
      pa[kc][2] = pack2<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]);
      pa[kc][3] = pack2<T>(s[2 * kc + 1][2], s[2 * kc + 1][3]);
    }
  };

  // The tile's two products. wgmma (per warpgroup): each MMA is waited for before its result is used (a
  // one-tile software pipeline, P_{t-1} V_{t-1} issued with S_t and overlapping tile t's softmax, was no
  // faster: d1bf74f, H100, the tree shapes within -5 % / +5 %). Descriptors: one base per operand, k-steps
  // and ring stages as constant offsets (bytes >> 4) added to the start-address field. Q / K are K-major
  // (8-row groups 1024 bytes apart; k-step kk is 32 bytes into the rows of half kk / 4), V is MN-major
  // (8-key groups 1024 bytes apart, 64-column halves a tile half apart).
  const uint64_t q_desc = gmma_desc(s_q + (wm & ~3) * 16 * 64, 16, 1024);
  const uint64_t k_desc = gmma_desc(s_k, 16, 1024);
  const uint64_t v_desc = gmma_desc(s_v, kBlockN * 64 * sizeof(T), 1024);
  constexpr uint32_t kStageStep = Cfg::kTileElems * sizeof(T) / 16;
  auto k_major_step = [](int kk, int rows) { return uint32_t(((kk >> 2) * rows * 128 + (kk & 3) * 32) / 16); };
  // mma.sync (per warp): ldmatrix sources as per-lane element offsets, fixed for the KV loop. Every
  // fragment's swizzle row term is lane & 7 and a k-step adds 2 to the chunk (bit 0 clear), so fragment
  // (kk, np) of a tile is at half (kk / 4) + (lane offset ^ (kk % 4) * 16) + np * 16 rows: one LOP3 per
  // k-step, the rest immediates.
  const int r8 = lane & 7;
  const int q_lane = tile_offset<kBlockM>(wm * 16 + (lane & 15), lane >> 4);
  const int k_lane = tile_offset<kBlockN>(col0 + r8 + ((lane >> 4) << 3), (lane >> 3) & 1);
  const int v_lane = tile_offset<kBlockN>(col0 + r8 + (((lane >> 3) & 1) << 3), lane >> 4);
  auto frag = [](int lane_offset, int kk, int half_elems) {
    return (kk >> 2) * half_elems + (lane_offset ^ ((kk & 3) * 16));
  };

  // S = Q K^T for this warp's 16 rows x kWarpN columns of the tile in `stage`.
  auto mma_qk = [&](float (&s)[kWarpN / 8][4], int stage) {
    if constexpr (Cfg::kWgmma) {
      fence_registers(s);
      cute::warpgroup_arrive();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        wgmma_ss<typename Wgmma<T, D>::QK>(q_desc + k_major_step(kk, kBlockM),
                                           k_desc + (stage * kStageStep + k_major_step(kk, kBlockN)), &s[0][0],
                                           kk > 0, std::make_index_sequence<kWarpN / 2>{});
      cute::warpgroup_commit_batch();
      cute::warpgroup_wait<0>();
      fence_registers(s);
    } else {
      // Q's fragments are re-read from shared memory every tile (D / 16 ldmatrix against kWarpN / 16 times
      // as many for K): kept in registers they pushed the 8-warp D = 64 tile past its 128-register bound.
      const T* tk = s_k + stage * Cfg::kTileElems;
#pragma unroll
      for (int i = 0; i < kWarpN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t q_frag[4];
        ldsm(s_q + frag(q_lane, kk, kBlockM * 64), q_frag);
#pragma unroll
        for (int np = 0; np < kWarpN / 16; ++np) {
          uint32_t kb[4];
          ldsm(tk + frag(k_lane, kk, kBlockN * 64) + np * 16 * 64, kb);
          mma<T>(s[2 * np], q_frag, kb[0], kb[1]);
          mma<T>(s[2 * np + 1], q_frag, kb[2], kb[3]);
        }
      }
    }
  };
  // O += P V with the tile in `stage`.
  auto mma_pv = [&](const uint32_t (&pa)[kWarpN / 16][4], int stage) {
    if constexpr (Cfg::kWgmma) {
      fence_registers(o);
      cute::warpgroup_arrive();
#pragma unroll
      for (int kc = 0; kc < kWarpN / 16; ++kc)
        wgmma_rs<typename Wgmma<T, D>::PV>(pa[kc], v_desc + (stage * kStageStep + kc * 16 * 128 / 16), &o[0][0],
                                           std::make_index_sequence<D / 2>{});
      cute::warpgroup_commit_batch();
      cute::warpgroup_wait<0>();  // also retires this warpgroup's reads of the stage before the next barrier
      fence_registers(o);
    } else {
      const T* tv = s_v + stage * Cfg::kTileElems;
#pragma unroll
      for (int kc = 0; kc < kWarpN / 16; ++kc) {
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t vb[4];
          ldsm_t(tv + frag(v_lane, dp, kBlockN * 64) + kc * 16 * 64, vb);
          mma<T>(o[2 * dp], pa[kc], vb[0], vb[1]);
          mma<T>(o[2 * dp + 1], pa[kc], vb[2], vb[3]);
        }
      }
    }
  };

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int stage = advance_ring(tile);
    if (!active) continue;
    float s[kWarpN / 8][4];
    mma_qk(s, stage);
    float alpha[2];
    softmax_tile(s, tile, alpha);
    rescale_o(alpha);
    uint32_t pa[kWarpN / 16][4];
    pack_p(s, pa);
    mma_pv(pa, stage);
  }
  pdl_launch_dependents();  // the next kernel may start its launch; it waits for our completion anyway
  cute::cp_async_wait<0>();
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {  // each row's l over its 4 owner lanes
    l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 1);
    l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 2);
  }

  // One split and one warp per row (the 8-warp tiles without a KV split): the warp holds its rows' whole
  // state, so it normalizes and stores them from registers (no barrier, no shared memory). ncu at
  // cca99ce put ~15 % of the 1B B16 n21 kernel's warp samples in the cluster epilogue's barriers and loads.
  if (Cfg::kWarpsN == 1 && p.num_splits == 1) {
    if (!active) return;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int row = row0 + wm * 16 + g + 8 * hr;
      if (row >= rows) continue;
      const float inv = l[hr] > 0.f ? 1.f / l[hr] : 0.f;
      const int token = token_of(row), head = head_of(row);
      T* dst = static_cast<T*>(p.out) + token * p.out_stride_n + head * p.out_stride_h + 2 * t4;
#pragma unroll
      for (int df = 0; df < D / 8; ++df)
        *reinterpret_cast<uint32_t*>(dst + df * 8) = pack2<T>(o[df][2 * hr] * inv, o[df][2 * hr + 1] * inv);
      if (t4 == 0 && p.lse != nullptr) p.lse[int64_t(token) * p.num_qo_heads + head] = natural_lse(m[hr], l[hr]);
    }
    return;
  }

  // Otherwise every warp parks (m, l, O) in shared memory (over the KV ring); after a barrier (the
  // cluster's when the KV is split) the cluster's CTAs split the row block's (row, 4 columns) items among
  // them and merge, for each, the kWarpsN x num_splits states, reading the other CTAs' states through
  // distributed shared memory.
  const bool clustered = p.num_splits > 1;
  __syncthreads();
  float* s_o = reinterpret_cast<float*>(smem + Cfg::kSmemQ);  // [kEpiRows][kOStride]
  float* s_m = s_o + Cfg::kEpiRows * Cfg::kOStride;
  float* s_l = s_m + Cfg::kEpiRows;
  if (active) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int r = wn * kBlockM + wm * 16 + g + 8 * hr;
      if (t4 == 0) {
        s_m[r] = m[hr];
        s_l[r] = l[hr];
      }
#pragma unroll
      for (int df = 0; df < D / 8; ++df)
        *reinterpret_cast<float2*>(s_o + r * Cfg::kOStride + df * 8 + 2 * t4) = make_float2(o[df][2 * hr], o[df][2 * hr + 1]);
    }
  }
  if (clustered) cluster_sync();  // every state of the cluster is written (release / acquire)
  else __syncthreads();

  const int num_items = min(kBlockM, rows - row0) * (D / 4);
  for (int e = split * kThreads + tid; e < num_items; e += kThreads * p.num_splits) {
    const int r = e / (D / 4), c4 = e % (D / 4);
    float mx = kNegInf;
#pragma unroll 4
    for (int rank = 0; rank < p.num_splits; ++rank) {
      const uint32_t m_addr = cluster_addr(s_m + r, rank);
#pragma unroll
      for (int w = 0; w < Cfg::kWarpsN; ++w) mx = fmaxf(mx, cluster_load(m_addr + 4 * w * kBlockM));
    }
    const float base = mx == kNegInf ? 0.f : mx;
    float sum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4  // the ranks' loads issue together instead of one remote round trip per rank
    for (int rank = 0; rank < p.num_splits; ++rank) {
      const uint32_t m_addr = cluster_addr(s_m + r, rank), l_addr = cluster_addr(s_l + r, rank);
      const uint32_t o_addr = cluster_addr(s_o + r * Cfg::kOStride + c4 * 4, rank);
#pragma unroll
      for (int w = 0; w < Cfg::kWarpsN; ++w) {
        const float scale = ex2(cluster_load(m_addr + 4 * w * kBlockM) - base);
        sum += scale * cluster_load(l_addr + 4 * w * kBlockM);
        const float4 v = cluster_load4(o_addr + 4 * w * kBlockM * Cfg::kOStride);
        acc.x += scale * v.x, acc.y += scale * v.y, acc.z += scale * v.z, acc.w += scale * v.w;
      }
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    const int token = token_of(row0 + r), head = head_of(row0 + r);
    T* dst = static_cast<T*>(p.out) + token * p.out_stride_n + head * p.out_stride_h + c4 * 4;
    *reinterpret_cast<uint2*>(dst) =
        make_uint2(pack2<T>(acc.x * inv, acc.y * inv), pack2<T>(acc.z * inv, acc.w * inv));
    if (c4 == 0 && p.lse != nullptr) p.lse[int64_t(token) * p.num_qo_heads + head] = natural_lse(mx, sum);
  }
  if (clustered) cluster_sync();  // no CTA leaves while another may still read its states
}

// > 48 KB of dynamic shared memory and clusters of more than 8 CTAs need a per-kernel opt-in (per device).
template <typename T, int D, TileShape kShape>
cudaError_t prepare_kernel() {
  static bool done[kMaxDevices] = {};
  return once_per_device(done, [] {
    const auto kernel = tree_attention_kernel<T, D, kShape>;
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Config<T, D, kShape>::kSmem);
    int device = 0, major = 0;
    if (err == cudaSuccess) err = cudaGetDevice(&device);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (err == cudaSuccess && major >= 9) err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    return err;
  });
}

template <typename T, int D, TileShape kShape>
cudaLaunchConfig_t launch_config(const Params& p, cudaStream_t stream, cudaLaunchAttribute (&attrs)[2]) {
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(p.m_tiles * p.num_splits, p.num_kv_heads, p.batch);
  config.blockDim = dim3(Config<T, D, kShape>::kThreads);
  config.dynamicSmemBytes = Config<T, D, kShape>::kSmem;
  config.stream = stream;
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = p.num_splits;
  attrs[0].val.clusterDim.y = 1;
  attrs[0].val.clusterDim.z = 1;
  attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[1].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attrs;
  config.numAttrs = 2;
  return config;
}

template <typename T, int D, TileShape kShape>
cudaError_t launch_shape(const Params& p, cudaStream_t stream) {
  if (const cudaError_t err = prepare_kernel<T, D, kShape>(); err != cudaSuccess) return err;
  cudaLaunchAttribute attrs[2];
  const cudaLaunchConfig_t config = launch_config<T, D, kShape>(p, stream, attrs);
  return cudaLaunchKernelEx(&config, tree_attention_kernel<T, D, kShape>, p);
}

template <typename T, int D>
cudaError_t launch(const Params& p, TileShape shape, cudaStream_t stream) {
  switch (shape) {
    case TileShape::kM16: return launch_shape<T, D, TileShape::kM16>(p, stream);
    case TileShape::kM32: return launch_shape<T, D, TileShape::kM32>(p, stream);
    case TileShape::kM64: return launch_shape<T, D, TileShape::kM64>(p, stream);
    default: return launch_shape<T, D, TileShape::kM128>(p, stream);
  }
}

// Resident CTAs per SM (occupancy query) and the largest cluster that fits: 16 when the device can hold
// a 16-CTA cluster of this kernel, else 8 (portable), 1 without clusters (before sm_90).
template <typename T, int D, TileShape kShape>
Occupancy occupancy_shape() {
  static const Occupancy cached = [] {
    Occupancy occ{1, 1};
    int device = 0, major = 0;
    if (prepare_kernel<T, D, kShape>() != cudaSuccess || cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
      return occ;
    const auto kernel = tree_attention_kernel<T, D, kShape>;
    int blocks = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, Config<T, D, kShape>::kThreads,
                                                      Config<T, D, kShape>::kSmem) == cudaSuccess)
      occ.ctas_per_sm = blocks > 0 ? blocks : 1;
    if (major >= 9) {
      Params probe{};
      probe.m_tiles = 1;
      probe.num_kv_heads = probe.batch = 1;
      probe.num_splits = kMaxSplits;
      cudaLaunchAttribute attrs[2];
      cudaLaunchConfig_t config = launch_config<T, D, kShape>(probe, nullptr, attrs);
      config.numAttrs = 1;  // the cluster shape only
      int clusters = 0;
      occ.max_splits = cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) == cudaSuccess && clusters > 0
                           ? kMaxSplits : 8;
    }
    cudaGetLastError();  // a failed query leaves no sticky error behind
    return occ;
  }();
  return cached;
}

template <typename T, int D>
Occupancy occupancy(TileShape shape) {
  switch (shape) {
    case TileShape::kM16: return occupancy_shape<T, D, TileShape::kM16>();
    case TileShape::kM32: return occupancy_shape<T, D, TileShape::kM32>();
    case TileShape::kM64: return occupancy_shape<T, D, TileShape::kM64>();
    default: return occupancy_shape<T, D, TileShape::kM128>();
  }
}

}  // namespace ssdk::tree_attn
