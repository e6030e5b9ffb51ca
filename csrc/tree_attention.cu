// Launcher for tree attention over a paged KV cache (device code: include/ssdk/tree_attention_kernel.cuh,
// instantiated in tree_attention_hdim{64,128}.cu).
// Computes, per request b, attention of its n_b new query rows over the prefix (all visible) plus the
// new tokens allowed by a compact ancestor bitmask (or causal when tree_mask is None).
// Shapes: q/out [N, Hq, D]; k_cache/v_cache [pages, page_size, Hkv, D]; block_tables [B, max_pages];
// prefix_lens [B]; qo_indptr [B + 1]; tree_mask [N, W] int32; lse [N, Hq] fp32. fp16/bf16, D in {64, 128}.
// Arch: sm_90 (wgmma on sm_90a for 64- and 128-row tiles, mma.sync otherwise, through CuTe's atoms; a
// thread-block cluster per row block for split-KV; programmatic dependent launch). max_q_len == 1
// (decode) with a GQA group <= 16 takes the decode kernel (tree_attention_decode.cuh): a split-KV grid,
// then a merge kernel over an fp32 workspace. Needs the CUTLASS headers at build time (SSDK_HAS_CUTLASS).
// Reference: ssdk.ref.attention.tree_attention (fp32 dense masked attention).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "ops.h"
#include "ssdk/common.cuh"
#include "ssdk/tree_attention.cuh"
#include "torch_utils.h"

namespace ssdk {
namespace {

using tree_attn::TileShape;

void check_index(const at::Tensor& t, const at::Tensor& q, const char* name) {
  check_same_device(t, q, name, "q");
  check_dtype(t, at::kInt, name);
  check_contiguous(t, name);
}

// cp.async moves 16-byte chunks: rows must start on 16-byte boundaries.
void check_aligned_rows(const at::Tensor& t, const char* name, int dims) {
  TORCH_CHECK(t.stride(-1) == 1, "ssdk: ", name, " must be contiguous in its last dimension, got strides ",
              c10::str(t.strides()));
  bool ok = is_aligned(t.data_ptr(), 16);
  for (int d = 0; d < dims; ++d) ok = ok && t.stride(d) % 8 == 0;
  TORCH_CHECK(ok, "ssdk: ", name, " must have 16-byte aligned rows (data pointer and strides), got strides ",
              c10::str(t.strides()));
}

#ifdef SSDK_HAS_CUTLASS

// KV splits per row block: enough that the grid fills one wave of resident CTAs (a small batch still
// covers every SM; a large one is not cut into states it would have to merge), at most the cluster
// limit and the 64-token tiles of the longest possible request (block_tables width), then as few as
// give the same tiles per split. One split per row block that fills a wave and spills at most half a wave
// more runs that last wave at full length: two splits (half the tiles per CTA) finish sooner (H100, 8B B4
// L4096 n133, 160 row blocks on 132 slots: 224 µs at 1 split, 185-196 at 2 in four runs).
int choose_splits(int64_t base_ctas, int64_t max_tiles, int64_t requested, tree_attn::Occupancy occ, int sms) {
  const int64_t slots = int64_t{sms} * occ.ctas_per_sm;
  int64_t splits = requested > 0 ? requested : slots / std::max<int64_t>(base_ctas, 1);
  if (requested <= 0 && base_ctas > slots && 2 * base_ctas <= 3 * slots) splits = 2;
  max_tiles = std::max<int64_t>(max_tiles, 1);
  splits = std::clamp<int64_t>(splits, 1, std::min<int64_t>(max_tiles, occ.max_splits));
  const int64_t tiles_per_split = (max_tiles + splits - 1) / splits;
  return static_cast<int>((max_tiles + tiles_per_split - 1) / tiles_per_split);
}

// Decode splits per (request, kv head): as many as one wave of resident CTAs holds, at most
// kMaxDecodeSplits and a block_tables row's 64-token tiles / kDecodeMinSplitTiles (the merge kernel's CTAs
// load their states in one round trip, so more splits cost it no time on the critical path), 1 when the
// pairs alone fill the wave. Two tiles per split at least: alone, one tile per split is up to 0.6 µs faster
// (8B B1 L1024 7.88 vs 8.46 µs at cd98da5, FlashInfer 9.82), but inside a decode step the fewer CTAs leave
// SMs to the next GEMV, which prefetches its weight before its wait (Llama-3.1-8B B1 e2e, 11-tile rows,
// H100 at 99b429d: one tile per split 170.4 / 170.5 tok/s, two 175.4, three 174.2, six 172.9, eleven
// (one split) 162.3). A short row (<= kDecodeShortTiles tiles) gets one tile per split only when its
// K/V exceed kDecodeSerialBytes and that many splits fit the wave, else 1: one CTA streams 48 KB as fast
// as a split call merges. H100, cd98da5, 3-tile rows (L128): D = 64 (48 KB) 1B B1 5.49 us either way, B4
// 5.53 unsplit vs 5.82 in 3 splits; D = 128 (96 KB) 8B B1 8.63 vs 7.36, B4 8.68 vs 7.71, and B16
// (3 x 128 CTAs > the 264 of a wave) 8.40 vs 13.81. Pairs that alone put a CTA on nearly every SM, each CTA
// keeping >= kDecodeSerialBytes in flight (its two tiles ahead: D = 128), over a table of <= kDecodeOneSplitTiles
// tiles take one split: no merge kernel, which costs more there than a second CTA per SM gains. H100 (kernel
// notes, decode round 3): 8B B16 L1024 (17 tiles) S = 1 31.0-31.3 µs vs S = 2 33.3-33.5 (32.3 vs 33.8 in an
// earlier run); at L4096 (65 tiles) S = 2 stays faster (100.5-101.0 vs 102.9-103.4); D = 64 needs the splits
// (1B B16 L1024 S = 1 17.5 vs 13.4-13.9). A requested count is only clamped.
constexpr int64_t kDecodeShortTiles = 3;
constexpr int64_t kDecodeSerialBytes = 48 << 10;
constexpr int64_t kDecodeMinSplitTiles = 2;
constexpr int64_t kDecodeOneSplitTiles = 32;
int choose_decode_splits(int64_t pairs, int64_t max_tiles, int64_t tile_bytes, int64_t requested, int ctas_per_sm,
                         int sms) {
  max_tiles = std::max<int64_t>(max_tiles, 1);
  const int64_t cap = std::min<int64_t>(max_tiles, tree_attn::kMaxDecodeSplits);
  if (requested > 0) return static_cast<int>(std::clamp<int64_t>(requested, 1, cap));
  const int64_t wave = int64_t{sms} * ctas_per_sm / pairs;
  if (max_tiles <= kDecodeShortTiles)
    return max_tiles * tile_bytes > kDecodeSerialBytes && max_tiles <= wave ? static_cast<int>(max_tiles) : 1;
  if (10 * pairs >= 9 * int64_t{sms} && 2 * tile_bytes >= kDecodeSerialBytes && max_tiles <= kDecodeOneSplitTiles)
    return 1;
  const int64_t min_tile_splits = (max_tiles + kDecodeMinSplitTiles - 1) / kDecodeMinSplitTiles;
  return static_cast<int>(std::clamp<int64_t>(std::min(wave, min_tile_splits), 1, cap));
}

// The fields both kernels share, from the checked tensors.
void set_paged_args(tree_attn::PagedAttentionArgs& p, const at::Tensor& q, const at::Tensor& out,
                    const std::optional<at::Tensor>& lse, const at::Tensor& k_cache, const at::Tensor& v_cache,
                    const at::Tensor& block_tables, const at::Tensor& prefix_lens, const at::Tensor& qo_indptr,
                    const std::optional<at::Tensor>& tree_mask, int64_t group, double sm_scale) {
  p.q = q.data_ptr();
  p.out = out.data_ptr();
  p.lse = lse ? lse->data_ptr<float>() : nullptr;
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.block_tables = block_tables.data_ptr<int32_t>();
  p.prefix_lens = prefix_lens.data_ptr<int32_t>();
  p.qo_indptr = qo_indptr.data_ptr<int32_t>();
  p.tree_mask = tree_mask ? tree_mask->data_ptr<int32_t>() : nullptr;
  p.q_stride_n = q.stride(0);
  p.q_stride_h = q.stride(1);
  p.out_stride_n = out.stride(0);
  p.out_stride_h = out.stride(1);
  p.k_stride_page = k_cache.stride(0);
  p.k_stride_tok = k_cache.stride(1);
  p.k_stride_head = k_cache.stride(2);
  p.v_stride_page = v_cache.stride(0);
  p.v_stride_tok = v_cache.stride(1);
  p.v_stride_head = v_cache.stride(2);
  p.block_table_stride = block_tables.stride(0);
  p.mask_stride = tree_mask ? tree_mask->stride(0) : 0;
  p.page_size = static_cast<int>(k_cache.size(1));
  p.num_qo_heads = static_cast<int>(q.size(1));
  p.num_kv_heads = static_cast<int>(k_cache.size(2));
  p.group = static_cast<int>(group);
  p.batch = static_cast<int>(block_tables.size(0));
  p.page_shift = (p.page_size & (p.page_size - 1)) == 0 ? __builtin_ctz(p.page_size) : -1;
  p.scale_log2 = static_cast<float>(sm_scale * 1.4426950408889634);
}

// Copy layout of the decode kernel: whole rows per copy instruction once the call holds >= 1024 tiles (all
// requests and kv heads), two threads per row below. H100 A/B of the two layouts (kernel notes, decode round
// 3): the narrow one is 15-30 % faster on latency-bound calls (1B B1 L128 5.3 -> 4.0 µs, 8B B1 L1024 9.1 ->
// 6.4) and 5-8 % slower on long streaming ones (1B B64 L4096 186 -> 200, 8B 364 -> 389, 1B B16 L1024 14.3
// -> 16.6); the threshold separates every quick n = 1 shape but 8B B64 L128 (1536 tiles, narrow 1 µs faster).
constexpr int64_t kDecodeWideCopyTiles = 1024;

template <typename T, int D>
void run_decode(tree_attn::DecodeParams& p, int64_t requested_splits, int64_t max_tiles, const at::Tensor& q) {
  constexpr int64_t kTileBytes = int64_t{tree_attn::kBlockN} * D * 2 * sizeof(T);  // K and V of one tile
  const int64_t pairs = int64_t{p.batch} * p.num_kv_heads;
  p.num_splits = choose_decode_splits(pairs, max_tiles, kTileBytes, requested_splits,
                                      tree_attn::decode_ctas_per_sm<T, D>(), sm_count(q.get_device()));
  p.wide_copies = pairs * max_tiles >= kDecodeWideCopyTiles;
  at::Tensor workspace;
  if (p.num_splits > 1) {
    const int64_t states = pairs * p.num_splits * p.group;
    workspace = at::empty({states * (D + 1)}, q.options().dtype(at::kFloat));
    p.partial_o = workspace.data_ptr<float>();
    p.partial_lse = p.partial_o + states * D;
  }
  check_cuda_call(tree_attn::launch_decode<T, D>(p, c10::cuda::getCurrentCUDAStream()),
                  "tree_attention decode kernel launch");
}

template <typename T, int D>
void run(tree_attn::Params& p, TileShape shape, int64_t requested_splits, int64_t max_tiles, const at::Tensor& q) {
  const tree_attn::Occupancy occ = tree_attn::occupancy<T, D>(shape);
  p.num_splits = choose_splits(int64_t{p.batch} * p.num_kv_heads * p.m_tiles, max_tiles, requested_splits, occ,
                               sm_count(q.get_device()));
  check_cuda_call(tree_attn::launch<T, D>(p, shape, c10::cuda::getCurrentCUDAStream()), "tree_attention kernel launch");
}
#endif  // SSDK_HAS_CUTLASS

}  // namespace

void tree_attention(at::Tensor& out, const std::optional<at::Tensor>& lse, const at::Tensor& q, const at::Tensor& k_cache,
                    const at::Tensor& v_cache, const at::Tensor& block_tables, const at::Tensor& prefix_lens,
                    const at::Tensor& qo_indptr, const std::optional<at::Tensor>& tree_mask, int64_t max_q_len,
                    double sm_scale, int64_t num_kv_splits) {
  check_cuda(q, "q");
  check_dtype_in(q, {at::kHalf, at::kBFloat16}, "q");
  TORCH_CHECK(q.dim() == 3, "ssdk: q must have shape [N_total, num_qo_heads, head_dim], got ", shape_str(q));
  const int64_t n_total = q.size(0), num_qo_heads = q.size(1), head_dim = q.size(2);
  TORCH_CHECK(head_dim == 64 || head_dim == 128, "ssdk: q head_dim must be 64 or 128, got ", head_dim);
  check_same_device(out, q, "out", "q");
  check_dtype(out, q.scalar_type(), "out");
  TORCH_CHECK(out.sizes() == q.sizes(), "ssdk: out must have the shape of q ", shape_str(q), ", got ", shape_str(out));
  for (const auto* t : {&k_cache, &v_cache}) {
    const char* name = t == &k_cache ? "k_cache" : "v_cache";
    check_same_device(*t, q, name, "q");
    check_dtype(*t, q.scalar_type(), name);
    TORCH_CHECK(t->dim() == 4 && t->size(3) == head_dim, "ssdk: ", name,
                " must have shape [num_pages, page_size, num_kv_heads, ", head_dim, "], got ", shape_str(*t));
    check_aligned_rows(*t, name, 3);
    TORCH_CHECK(t->stride(0) < (int64_t{1} << 31) && t->size(1) * t->stride(1) < (int64_t{1} << 31) &&
                    t->stride(2) < (int64_t{1} << 31),
                "ssdk: ", name, " must have page, token and head strides below 2^31 elements, got ",
                c10::str(t->strides()));
  }
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), "ssdk: v_cache must have the shape of k_cache ",
              shape_str(k_cache), ", got ", shape_str(v_cache));
  const int64_t page_size = k_cache.size(1), num_kv_heads = k_cache.size(2);
  TORCH_CHECK(num_kv_heads > 0 && num_qo_heads % num_kv_heads == 0, "ssdk: num_qo_heads (", num_qo_heads,
              ") must be a multiple of num_kv_heads (", num_kv_heads, ")");
  check_index(block_tables, q, "block_tables");
  TORCH_CHECK(block_tables.dim() == 2, "ssdk: block_tables must have shape [batch, max_pages], got ",
              shape_str(block_tables));
  const int64_t batch = block_tables.size(0);
  check_index(prefix_lens, q, "prefix_lens");
  TORCH_CHECK(prefix_lens.dim() == 1 && prefix_lens.size(0) == batch, "ssdk: prefix_lens must have shape [", batch,
              "], got ", shape_str(prefix_lens));
  check_index(qo_indptr, q, "qo_indptr");
  TORCH_CHECK(qo_indptr.dim() == 1 && qo_indptr.size(0) == batch + 1, "ssdk: qo_indptr must have shape [",
              batch + 1, "], got ", shape_str(qo_indptr));
  TORCH_CHECK(max_q_len >= 0 && (max_q_len > 0 || n_total == 0), "ssdk: max_q_len must be >= 1, got ", max_q_len);
  if (tree_mask) {
    check_same_device(*tree_mask, q, "tree_mask", "q");
    check_dtype(*tree_mask, at::kInt, "tree_mask");
    TORCH_CHECK(tree_mask->dim() == 2 && tree_mask->size(0) == n_total && tree_mask->size(1) * 32 >= max_q_len &&
                    tree_mask->stride(1) == 1,
                "ssdk: tree_mask must have shape [", n_total, ", W >= ", (max_q_len + 31) / 32,
                "] with a contiguous last dimension, got ", shape_str(*tree_mask));
  }
  if (lse) {
    check_same_device(*lse, q, "lse", "q");
    check_dtype(*lse, at::kFloat, "lse");
    TORCH_CHECK(lse->dim() == 2 && lse->size(0) == n_total && lse->size(1) == num_qo_heads && lse->is_contiguous(),
                "ssdk: lse must be a contiguous [", n_total, ", ", num_qo_heads, "] tensor, got ", shape_str(*lse));
  }
  TORCH_CHECK(num_kv_splits >= 0, "ssdk: num_kv_splits must be >= 0, got ", num_kv_splits);
  TORCH_CHECK(sm_scale > 0 && std::isfinite(sm_scale), "ssdk: sm_scale must be positive and finite, got ", sm_scale);
  if (n_total == 0 || batch == 0) return;
  check_aligned_rows(q, "q", 2);
  TORCH_CHECK(out.stride(-1) == 1 && out.stride(0) % 4 == 0 && out.stride(1) % 4 == 0 && is_aligned(out.data_ptr(), 8),
              "ssdk: out must have 8-byte aligned rows and a contiguous last dimension, got strides ",
              c10::str(out.strides()));
  TORCH_CHECK(batch <= 65535 && num_kv_heads <= 65535, "ssdk: batch and num_kv_heads must be <= 65535");
  TORCH_CHECK(n_total * num_qo_heads * head_dim < (int64_t{1} << 31), "ssdk: q has too many elements");

#ifdef SSDK_HAS_CUTLASS
  const int64_t group = num_qo_heads / num_kv_heads;
  const int64_t max_tiles = (block_tables.size(1) * page_size + tree_attn::kBlockN - 1) / tree_attn::kBlockN;
  const c10::cuda::CUDAGuard guard(q.device());
  TORCH_CHECK(page_size > 0 && block_tables.size(1) * page_size < (int64_t{1} << 31),
              "ssdk: k_cache's page_size must be > 0 and block_tables map fewer than 2^31 positions");
  if (max_q_len == 1 && group <= tree_attn::kMaxDecodeGroup) {
    tree_attn::DecodeParams p{};
    set_paged_args(p, q, out, lse, k_cache, v_cache, block_tables, prefix_lens, qo_indptr, tree_mask, group,
                   sm_scale);
    p.table_pages = static_cast<int>(block_tables.size(1));
    if (q.scalar_type() == at::kHalf) {
      if (head_dim == 64) run_decode<__half, 64>(p, num_kv_splits, max_tiles, q);
      else run_decode<__half, 128>(p, num_kv_splits, max_tiles, q);
    } else {
      if (head_dim == 64) run_decode<__nv_bfloat16, 64>(p, num_kv_splits, max_tiles, q);
      else run_decode<__nv_bfloat16, 128>(p, num_kv_splits, max_tiles, q);
    }
    return;
  }
  const TileShape shape = tree_attn::shape_for_rows(max_q_len * group);
  const int64_t m_tiles = (max_q_len * group + tree_attn::block_m(shape) - 1) / tree_attn::block_m(shape);
  TORCH_CHECK(m_tiles * tree_attn::kMaxSplits < (int64_t{1} << 31), "ssdk: max_q_len is too large");

  tree_attn::Params p{};
  set_paged_args(p, q, out, lse, k_cache, v_cache, block_tables, prefix_lens, qo_indptr, tree_mask, group, sm_scale);
  p.m_tiles = static_cast<int>(m_tiles);
  if (q.scalar_type() == at::kHalf) {
    if (head_dim == 64) run<__half, 64>(p, shape, num_kv_splits, max_tiles, q);
    else run<__half, 128>(p, shape, num_kv_splits, max_tiles, q);
  } else {
    if (head_dim == 64) run<__nv_bfloat16, 64>(p, shape, num_kv_splits, max_tiles, q);
    else run<__nv_bfloat16, 128>(p, shape, num_kv_splits, max_tiles, q);
  }
#else
  TORCH_CHECK(false, "ssdk: tree_attention's CUDA kernel needs the CUTLASS/CuTe headers, and this build had none. "
              "Rebuild with them: pip install nvidia-cutlass (or set SSDK_CUTLASS_DIR to a CUTLASS checkout), then "
              "pip install --no-build-isolation .");
#endif
}

TORCH_LIBRARY_IMPL(ssdk, CUDA, m) { m.impl("tree_attention", &tree_attention); }

}  // namespace ssdk
