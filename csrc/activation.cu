// Launcher for silu_and_mul (device code: include/ssdk/activation.cuh).
// Shapes: input [..., 2d] = [gate | up], out [..., d]; rows strided, last dim contiguous; fp32/fp16/bf16,
// both the same dtype. Any arch >= sm_70.
// Reference: ssdk.ref.activation (fp32 math); hf_exact matches transformers' act_fn(gate) * up bit for bit.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops.h"
#include "ssdk/activation.cuh"
#include "torch_utils.h"

namespace ssdk {

void silu_and_mul(at::Tensor& out, const at::Tensor& input, bool hf_exact) {
  check_cuda(input, "input");
  check_float_dtype(input, "input");
  check_same_device(out, input, "out", "input");
  check_dtype(out, input.scalar_type(), "out");
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) % 2 == 0, "ssdk: input last dim must be even ([gate | up]), got ",
              shape_str(input));
  auto expected = input.sizes().vec();
  expected.back() /= 2;
  TORCH_CHECK(out.sizes() == at::IntArrayRef(expected), "ssdk: out must have shape ", c10::str(expected), ", got ",
              shape_str(out));
  const int64_t d = out.size(-1);
  const int64_t rows = d == 0 ? 0 : out.numel() / d;
  TORCH_CHECK(rows < (int64_t{1} << 31) && d < (int64_t{1} << 30), "ssdk: input too large ", shape_str(input));
  const int64_t input_stride = row_stride(input, "input"), out_stride = row_stride(out, "out");
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto run = [&](auto t) {
    using T = decltype(t);
    activation::SiluAndMulArgs<T> a{reinterpret_cast<T*>(out.data_ptr()), reinterpret_cast<const T*>(input.data_ptr()),
                                    out_stride, input_stride, static_cast<int>(rows), static_cast<int>(d), hf_exact};
    check_cuda_call(activation::launch_silu_and_mul<T>(a, stream), "silu_and_mul kernel launch");
  };
  switch (input.scalar_type()) {
    case at::kFloat: run(float{}); break;
    case at::kHalf: run(__half{}); break;
    default: run(__nv_bfloat16{}); break;
  }
}

TORCH_LIBRARY_IMPL(ssdk, CUDA, m) { m.impl("silu_and_mul", &silu_and_mul); }

// CPU tensors reach the same checks, so direct torch.ops callers get "must be a CUDA tensor".
TORCH_LIBRARY_IMPL(ssdk, CPU, m) {
  m.impl("silu_and_mul", &silu_and_mul);
}

}  // namespace ssdk
