// Tree attention over a paged KV cache: parameters and launch entry points (no CuTe, no torch).
// The kernels live in tree_attention_kernel.cuh and are instantiated per head dim in
// csrc/tree_attention_hdim{64,128}.cu; csrc/tree_attention.cu holds the torch launcher.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ssdk::tree_attn {

constexpr int kBlockN = 64;   // KV tokens per pipeline tile
constexpr int kThreads = 128; // 4 warps per CTA

// Tile shapes. A CTA owns BLOCK_M packed rows (row = query * group + head-in-group) of one request and
// one kv head. kNarrow (decode, rows <= 16): one 16-row MMA tile, the 4 warps split each KV tile's
// columns and merge their softmax states at the end. kWide: 64 rows, each warp owns 16 of them.
enum class TileShape { kNarrow, kWide };
constexpr int block_m(TileShape shape) { return shape == TileShape::kNarrow ? 16 : 64; }

struct Params {
  const void* q;  // [n_total, Hq, D]
  void* out;      // [n_total, Hq, D]
  float* lse;     // [n_total, Hq] natural log, or nullptr
  const void* k_cache;
  const void* v_cache;                 // [num_pages, page_size, Hkv, D]
  const int32_t* block_tables;         // [batch, block_table_stride]
  const int32_t* prefix_lens;          // [batch]
  const int32_t* qo_indptr;            // [batch + 1]
  const int32_t* tree_mask;            // [n_total, mask_stride] ancestor bits, or nullptr (causal)
  float* partial_o;                    // [num_splits, n_total, Hq, D] when num_splits > 1
  float* partial_lse;                  // [num_splits, n_total, Hq] (log2 domain)
  int64_t q_stride_n, q_stride_h, out_stride_n, out_stride_h;
  int64_t k_stride_page, k_stride_tok, k_stride_head;
  int64_t v_stride_page, v_stride_tok, v_stride_head;
  int64_t block_table_stride, mask_stride;
  int page_size, n_total, num_qo_heads, num_kv_heads, group, batch;
  int max_q_len, m_tiles, num_splits;
  float scale_log2;  // sm_scale * log2(e)
};

// Launches the attention kernel (and, when num_splits > 1, the merge kernel) on `stream`.
// T is __half or __nv_bfloat16; D is 64 or 128. Defined in tree_attention_hdim<D>.cu.
template <typename T, int D>
cudaError_t launch(const Params& params, TileShape shape, cudaStream_t stream);

}  // namespace ssdk::tree_attn
