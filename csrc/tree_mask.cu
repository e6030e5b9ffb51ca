// Launcher for build_tree_mask (device code: include/ssdk/tree_mask.cuh).
// Inputs: parents [N_total] int32 (local parent, -1 = attached to the prefix, parent < child),
// qo_indptr [B+1] int32, prefix_lens [B] int32. Outputs (preallocated): positions [N_total] int32/int64,
// depth [N_total] int32, tree_mask [N_total, W] int32 (W <= 32), optional packed_mask uint8 +
// mask_indptr [B+1] int32 (FlashInfer custom-mask layout). Any arch >= sm_70; no host sync.
// Reference: ssdk.ref.tree.build_tree_mask.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "ops.h"
#include "ssdk/tree_mask.cuh"
#include "torch_utils.h"

namespace ssdk {
namespace {

void check_vec(const at::Tensor& t, const char* name, int64_t len, const at::Tensor& ref) {
  check_same_device(t, ref, name, "parents");
  check_contiguous(t, name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == len, "ssdk: ", name, " must have shape [", len, "], got ", shape_str(t));
}

}  // namespace

void build_tree_mask(const at::Tensor& parents, const at::Tensor& qo_indptr, const at::Tensor& prefix_lens,
                     at::Tensor& positions, at::Tensor& depth, at::Tensor& tree_mask,
                     const std::optional<at::Tensor>& packed_mask, const std::optional<at::Tensor>& mask_indptr,
                     int64_t packed_rows) {
  check_cuda(parents, "parents");
  check_dtype(parents, at::kInt, "parents");
  TORCH_CHECK(parents.dim() == 1, "ssdk: parents must be 1-D, got ", shape_str(parents));
  const int64_t n_total = parents.size(0);
  check_contiguous(parents, "parents");
  TORCH_CHECK(qo_indptr.dim() == 1 && qo_indptr.size(0) >= 1, "ssdk: qo_indptr must have shape [B+1], got ",
              shape_str(qo_indptr));
  const int64_t batch = qo_indptr.size(0) - 1;
  TORCH_CHECK(batch <= 65535, "ssdk: at most 65535 requests, got ", batch);
  check_dtype(qo_indptr, at::kInt, "qo_indptr");
  check_vec(qo_indptr, "qo_indptr", batch + 1, parents);
  check_dtype(prefix_lens, at::kInt, "prefix_lens");
  check_vec(prefix_lens, "prefix_lens", batch, parents);
  check_dtype_in(positions, {at::kInt, at::kLong}, "positions");
  check_vec(positions, "positions", n_total, parents);
  check_dtype(depth, at::kInt, "depth");
  check_vec(depth, "depth", n_total, parents);
  check_dtype(tree_mask, at::kInt, "tree_mask");
  check_same_device(tree_mask, parents, "tree_mask", "parents");
  check_contiguous(tree_mask, "tree_mask");
  TORCH_CHECK(tree_mask.dim() == 2 && tree_mask.size(0) == n_total && tree_mask.size(1) >= 1 &&
                  tree_mask.size(1) <= tree::kMaxMaskWords,
              "ssdk: tree_mask must have shape [", n_total, ", W] with 1 <= W <= ", tree::kMaxMaskWords, ", got ",
              shape_str(tree_mask));
  TORCH_CHECK(packed_mask.has_value() == mask_indptr.has_value(),
              "ssdk: packed_mask and mask_indptr must be given together");
  TORCH_CHECK(packed_rows >= 0, "ssdk: packed_rows must be >= 0, got ", packed_rows);
  tree::TreeMaskArgs args{};
  if (packed_mask.has_value()) {
    check_dtype(*packed_mask, at::kByte, "packed_mask");
    check_same_device(*packed_mask, parents, "packed_mask", "parents");
    check_contiguous(*packed_mask, "packed_mask");
    check_dtype(*mask_indptr, at::kInt, "mask_indptr");
    check_vec(*mask_indptr, "mask_indptr", batch + 1, parents);
    args.packed = packed_mask->data_ptr<uint8_t>();
    args.mask_indptr = mask_indptr->data_ptr<int32_t>();
  }
  args.parents = parents.data_ptr<int32_t>();
  args.qo_indptr = qo_indptr.data_ptr<int32_t>();
  args.prefix_lens = prefix_lens.data_ptr<int32_t>();
  args.positions = positions.data_ptr();
  args.positions_int64 = positions.scalar_type() == at::kLong;
  args.depth = depth.data_ptr<int32_t>();
  args.tree_mask = reinterpret_cast<uint32_t*>(tree_mask.data_ptr<int32_t>());
  args.batch = static_cast<int>(batch);
  args.words = static_cast<int>(tree_mask.size(1));
  args.packed_rows = static_cast<int>(packed_rows);
  // CTAs per request: about one 16-byte vector per thread of the average segment (the buffer's
  // capacity is the only size known without a host sync), at most 2 per SM over the batch. H100 (kernel
  // notes, tree mask rounds 5b and 12): allowing 4 per SM (the kernel's 64 registers fit 4) made B=64,
  // n=225, prefix 4096 faster (12.4 -> 10.7 µs) but B=16 at that shape (5.85 -> 6.55) and B=64, n=133,
  // prefix 1024 (5.9 -> 6.6) slower.
  int chunks = 1;
  bool geometry = false;  // a CTA's share of the capacity exceeds one round of vectors
  if (packed_mask.has_value() && batch > 0) {
    const int64_t per_request = packed_mask->numel() / batch;
    const int64_t want = (per_request + 16 * tree::kThreads - 1) / (16 * tree::kThreads);
    chunks = static_cast<int>(std::clamp<int64_t>(want, 1, std::max<int64_t>(1, 2 * sm_count(parents.get_device()) / batch)));
    geometry = per_request > int64_t{16} * tree::kThreads * chunks;
  }
  const c10::cuda::CUDAGuard guard(parents.device());
  check_cuda_call(tree::launch_tree_mask(args, chunks, geometry, c10::cuda::getCurrentCUDAStream()),
                  "build_tree_mask kernel launch");
}

TORCH_LIBRARY_IMPL(ssdk, CUDA, m) { m.impl("build_tree_mask", &build_tree_mask); }

}  // namespace ssdk
