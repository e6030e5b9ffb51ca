// Tree attention over a paged KV cache: parameters and launch entry points (no CuTe, no torch).
// The kernels live in tree_attention_kernel.cuh and are instantiated per head dim in
// csrc/tree_attention_hdim{64,128}.cu; csrc/tree_attention.cu holds the torch launcher.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ssdk::tree_attn {

constexpr int kBlockN = 64;     // KV tokens per pipeline tile
constexpr int kMaxSplits = 16;  // KV splits of one row block = CTAs of one thread-block cluster

// Tile shapes. A CTA owns BLOCK_M packed rows (row = query * group + head-in-group) of one request and
// one kv head, 16 rows per warp row; when BLOCK_M is small the warps also split each KV tile's columns:
//   kM16: 1 x 4 warps (decode, GQA group <= 16)   kM32: 2 x 2 warps
//   kM64: 4 x 1 warps                             kM128: 8 x 1 warps (trees; idle warps skip the MMAs)
enum class TileShape { kM16, kM32, kM64, kM128 };
constexpr int block_m(TileShape shape) {
  return shape == TileShape::kM16 ? 16 : shape == TileShape::kM32 ? 32 : shape == TileShape::kM64 ? 64 : 128;
}
// The smallest tile that holds `rows` packed rows, else the largest.
constexpr TileShape shape_for_rows(int64_t rows) {
  return rows <= 16 ? TileShape::kM16 : rows <= 32 ? TileShape::kM32 : rows <= 64 ? TileShape::kM64 : TileShape::kM128;
}

// The paged-KV attention problem both kernels read (tree: Params, decode: DecodeParams).
struct PagedAttentionArgs {
  const void* q;  // [n_total, Hq, D]
  void* out;      // [n_total, Hq, D]
  float* lse;     // [n_total, Hq] natural log, or nullptr
  const void* k_cache;
  const void* v_cache;                 // [num_pages, page_size, Hkv, D]
  const int32_t* block_tables;         // [batch, block_table_stride]
  const int32_t* prefix_lens;          // [batch]
  const int32_t* qo_indptr;            // [batch + 1]
  const int32_t* tree_mask;            // [n_total, mask_stride] ancestor bits, or nullptr (causal)
  int64_t q_stride_n, q_stride_h, out_stride_n, out_stride_h;
  int64_t k_stride_page, k_stride_tok, k_stride_head;
  int64_t v_stride_page, v_stride_tok, v_stride_head;
  int64_t block_table_stride, mask_stride;
  int page_size, num_qo_heads, num_kv_heads, group, batch;
  int page_shift;    // log2(page_size) for powers of two, else -1
  float scale_log2;  // sm_scale * log2(e), > 0

  // Page-table coordinates of KV position pos: a shift and a mask for power-of-two page sizes (an integer
  // division is ~20 instructions, paid per copied row and tile).
  __device__ __forceinline__ int page_index(int pos) const {
    return page_shift >= 0 ? pos >> page_shift : pos / page_size;
  }
  __device__ __forceinline__ int page_slot(int pos) const {
    return page_shift >= 0 ? pos & (page_size - 1) : pos % page_size;
  }
};

struct Params : PagedAttentionArgs {
  int m_tiles, num_splits;  // grid.x = m_tiles * num_splits; the splits of a row block form one cluster
};

// Launches the attention kernel on `stream` (one kernel: the splits merge inside their cluster).
// T is __half or __nv_bfloat16; D is 64 or 128. Defined in tree_attention_hdim<D>.cu.
template <typename T, int D>
cudaError_t launch(const Params& params, TileShape shape, cudaStream_t stream);

// Decode path (max_q_len == 1, GQA group <= kMaxDecodeGroup): one CTA per (request, kv head, KV split)
// holds the whole group; splits take 64-token tiles round-robin and a second kernel merges their fp32
// partial states (tree_attention_decode.cuh). Instantiated in csrc/tree_attention_decode.cu.
constexpr int kMaxDecodeGroup = 16;    // q heads per kv head in one mma M tile
constexpr int kMaxDecodeSplits = 128;  // partial states the merge kernel's 8 slices hold (16 per thread)

// n_b in {0, 1}; tree_mask bit 0 = the query sees its own token.
struct DecodeParams : PagedAttentionArgs {
  float* partial_o;    // [batch * Hkv, num_splits, group, D] fp32 (num_splits > 1 only)
  float* partial_lse;  // [batch * Hkv, num_splits, group] log2 domain
  int table_pages;     // block_tables width: the page ids a split may read before it knows the length
  int num_splits;      // grid.x
  bool wide_copies;    // copy layout of the split kernel (tree_attention_decode.cuh), chosen on the host
};

// Launches the split kernel and, when params.num_splits > 1, the merge kernel (both with PDL).
template <typename T, int D>
cudaError_t launch_decode(const DecodeParams& params, cudaStream_t stream);
template <typename T, int D>
int decode_ctas_per_sm();  // resident decode CTAs per SM (occupancy query, cached)

// Resident CTAs per SM and the largest split count (cluster size) the device can schedule for this
// instantiation; cached after the first query. Sizes the KV split on the host.
struct Occupancy {
  int ctas_per_sm, max_splits;
};
template <typename T, int D>
Occupancy occupancy(TileShape shape);

}  // namespace ssdk::tree_attn
