// Launchers for RMSNorm and fused residual-add RMSNorm (device code: include/ssdk/norm.cuh).
// Shapes: input/out/residual [..., hidden] with rows strided and the last dim contiguous; weight [hidden].
// dtypes: fp32/fp16/bf16, all arguments the same dtype. Any arch >= sm_70.
// Reference: ssdk.ref.norm (fp32 math); hf_exact matches transformers' LlamaRMSNorm bit for bit.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops.h"
#include "ssdk/norm.cuh"
#include "torch_utils.h"

namespace ssdk {
namespace {

void check_norm_args(const at::Tensor& input, const at::Tensor& weight, const char* input_name) {
  check_cuda(input, input_name);
  check_float_dtype(input, input_name);
  check_same_device(weight, input, "weight", input_name);
  check_dtype(weight, input.scalar_type(), "weight");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == input.size(-1), "ssdk: weight must have shape [",
              input.size(-1), "] (the last dim of ", input_name, "), got ", shape_str(weight));
  check_contiguous(weight, "weight");
}

template <typename T>
void run(at::Tensor& out, const at::Tensor& input, at::Tensor* residual, const at::Tensor& weight, double eps,
         bool hf_exact) {
  const int64_t hidden = input.size(-1);
  const int64_t rows = hidden == 0 ? 0 : input.numel() / hidden;
  TORCH_CHECK(rows < (int64_t{1} << 31), "ssdk: too many rows (", rows, ")");
  norm::RMSNormArgs<T> args{};
  args.out = reinterpret_cast<T*>(out.data_ptr());
  args.input = reinterpret_cast<const T*>(input.data_ptr());
  args.residual = residual ? reinterpret_cast<T*>(residual->data_ptr()) : nullptr;
  args.weight = reinterpret_cast<const T*>(weight.data_ptr());
  args.out_stride = row_stride(out, "out");
  args.input_stride = row_stride(input, "input");
  args.residual_stride = residual ? row_stride(*residual, "residual") : 0;
  args.rows = static_cast<int>(rows);
  args.hidden = static_cast<int>(hidden);
  args.eps = static_cast<float>(eps);
  args.hf_exact = hf_exact;
  args.num_sms = sm_count(input.get_device());
  args.l2_bytes = l2_cache_bytes(input.get_device());
  const c10::cuda::CUDAGuard guard(input.device());
  check_cuda_call(norm::launch_rmsnorm<T>(args, c10::cuda::getCurrentCUDAStream()), "rmsnorm kernel launch");
}

// The scalar path (odd or misaligned rows) holds at most 16 values per thread x 1024 threads.
constexpr int64_t kMaxHidden = 16384;

void check_hidden(int64_t hidden, const char* name) {
  TORCH_CHECK(hidden >= 1 && hidden <= kMaxHidden, "ssdk: ", name, " last dim (hidden size) must be in [1, ",
              kMaxHidden, "], got ", hidden);
}

}  // namespace

void rmsnorm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight, double eps, bool hf_exact) {
  check_norm_args(input, weight, "input");
  check_same_device(out, input, "out", "input");
  check_dtype(out, input.scalar_type(), "out");
  TORCH_CHECK(out.sizes() == input.sizes(), "ssdk: out must have the shape of input ", shape_str(input), ", got ",
              shape_str(out));
  check_hidden(input.size(-1), "input");
  dispatch_float(input.scalar_type(), "input", [&](auto t) {
    using T = decltype(t);
    run<T>(out, input, nullptr, weight, eps, hf_exact);
  });
}

void fused_add_rmsnorm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight, double eps,
                       bool hf_exact) {
  check_norm_args(input, weight, "input");
  check_same_device(residual, input, "residual", "input");
  check_dtype(residual, input.scalar_type(), "residual");
  TORCH_CHECK(residual.sizes() == input.sizes(), "ssdk: residual must have the shape of input ",
              shape_str(input), ", got ", shape_str(residual));
  check_hidden(input.size(-1), "input");
  dispatch_float(input.scalar_type(), "input", [&](auto t) {
    using T = decltype(t);
    run<T>(input, input, &residual, weight, eps, hf_exact);
  });
}

TORCH_LIBRARY_IMPL(ssdk, CUDA, m) {
  m.impl("rmsnorm", &rmsnorm);
  m.impl("fused_add_rmsnorm", &fused_add_rmsnorm);
}

// CPU tensors reach the same checks, so direct torch.ops callers get "must be a CUDA tensor".
TORCH_LIBRARY_IMPL(ssdk, CPU, m) {
  m.impl("rmsnorm", &rmsnorm);
  m.impl("fused_add_rmsnorm", &fused_add_rmsnorm);
}

}  // namespace ssdk
