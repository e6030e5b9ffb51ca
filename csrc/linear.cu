// Launcher for linear: out = x @ weight^T (+ bias), torch.nn.functional.linear's semantics into a given out
// (device code: include/ssdk/linear.cuh).
// Shapes: x [..., K], weight [N, K], bias [N] or None, out [..., N]; x and out rows strided (leading dims
// collapsible, last dim contiguous), weight rows strided (last dim contiguous); one dtype for all.
// Routing: fp16/bf16 with at most gemv::kMaxRows (4) rows of x take the skinny kernel (fp32 accumulation,
// one rounding); more rows, or fp32, go to cuBLAS through at::mm_out / at::addmm_out (torch's matmul).
// Any arch >= sm_70 (PDL on sm_90). Reference: ssdk.ref.linear (fp32 math).
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops.h"
#include "ssdk/linear.cuh"
#include "torch_utils.h"

namespace ssdk {

void linear(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_cuda(x, "x");
  check_float_dtype(x, "x");
  check_same_device(weight, x, "weight", "x");
  check_same_device(out, x, "out", "x");
  check_dtype(weight, x.scalar_type(), "weight");
  check_dtype(out, x.scalar_type(), "out");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) >= 1, "ssdk: x must have a last dimension K >= 1, got ", shape_str(x));
  const int64_t k = x.size(-1);
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == k, "ssdk: weight must have shape [N, ", k, "], got ",
              shape_str(weight));
  TORCH_CHECK(weight.size(1) <= 1 || weight.stride(1) == 1, "ssdk: weight must be contiguous in its last dimension, got strides ",
              c10::str(weight.strides()));
  const int64_t n = weight.size(0);
  if (bias) {
    check_same_device(*bias, x, "bias", "x");
    check_dtype(*bias, x.scalar_type(), "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == n, "ssdk: bias must have shape [", n, "], got ",
                shape_str(*bias));
    check_contiguous(*bias, "bias");
  }
  auto expected = x.sizes().vec();
  expected.back() = n;
  TORCH_CHECK(out.sizes() == at::IntArrayRef(expected), "ssdk: out must have shape ", c10::str(expected), ", got ",
              shape_str(out));
  const int64_t x_stride = row_stride(x, "x"), out_stride = row_stride(out, "out");
  const int64_t rows = x.numel() / k;
  if (rows == 0 || n == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());

  if (rows > gemv::kMaxRows || x.scalar_type() == at::kFloat) {  // cuBLAS
    const at::Tensor x2d = x.as_strided({rows, k}, {x_stride, 1});
    at::Tensor out2d = out.as_strided({rows, n}, {out_stride, 1});
    if (bias) at::addmm_out(out2d, *bias, x2d, weight.t());
    else at::mm_out(out2d, x2d, weight.t());
    return;
  }

  TORCH_CHECK(n < (int64_t{1} << 31) && k < (int64_t{1} << 31), "ssdk: weight too large ", shape_str(weight));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto run = [&](auto t) {
    using T = decltype(t);
    gemv::LinearArgs<T> a{reinterpret_cast<T*>(out.data_ptr()),
                            reinterpret_cast<const T*>(x.data_ptr()),
                            reinterpret_cast<const T*>(weight.data_ptr()),
                            bias ? reinterpret_cast<const T*>(bias->data_ptr()) : nullptr,
                            out_stride,
                            x_stride,
                            n == 1 ? k : weight.stride(0),
                            static_cast<int>(rows),
                            static_cast<int>(n),
                            static_cast<int>(k),
                            sm_count(x.get_device())};
    check_cuda_call(gemv::launch_skinny_linear<T>(a, stream), "linear kernel launch");
  };
  if (x.scalar_type() == at::kHalf) run(__half{});
  else run(__nv_bfloat16{});
}

TORCH_LIBRARY_IMPL(ssdk, CUDA, m) { m.impl("linear", &linear); }

// CPU tensors reach the same checks, so direct torch.ops callers get "must be a CUDA tensor".
TORCH_LIBRARY_IMPL(ssdk, CPU, m) { m.impl("linear", &linear); }

}  // namespace ssdk
