// Launchers for linear: out = x @ weight^T (+ bias), torch.nn.functional.linear's semantics into a given out,
// and linear_silu_mul: out = silu_and_mul(x @ weight^T) for a [gate | up] weight (device code:
// include/ssdk/linear.cuh).
// Shapes: x [..., K], weight [N, K], bias [N] or None, out [..., N] (linear_silu_mul: [..., N/2]); x and out
// rows strided (leading dims collapsible, last dim contiguous), weight rows strided (last dim contiguous); one
// dtype for all.
// Routing: fp16/bf16 with at most gemv::kMaxRows (4) rows of x take the skinny kernel (fp32 accumulation,
// one rounding; linear_silu_mul with the SwiGLU epilogue); more rows, or fp32, go to cuBLAS through
// at::mm_out / at::addmm_out (torch's matmul), and linear_silu_mul then runs silu_and_mul on that result.
// Any arch >= sm_70 (PDL on sm_90). Reference: ssdk.ref.linear (fp32 math).
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops.h"
#include "ssdk/linear.cuh"
#include "torch_utils.h"

namespace ssdk {
namespace {

// The checked geometry of one call: rows of x (leading dims collapsed), K, outputs N, row strides.
struct Problem {
  int64_t rows, k, n, x_stride, out_stride;
};

// x [..., K], weight [n or 2n, K] (last dim contiguous), out [..., n]; swiglu: weight holds [gate | up].
Problem check_linear(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, bool swiglu) {
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
  TORCH_CHECK(weight.size(1) <= 1 || weight.stride(1) == 1,
              "ssdk: weight must be contiguous in its last dimension, got strides ", c10::str(weight.strides()));
  TORCH_CHECK(!swiglu || weight.size(0) % 2 == 0,
              "ssdk: weight must have an even number of rows ([gate | up]), got ", shape_str(weight));
  const int64_t n = swiglu ? weight.size(0) / 2 : weight.size(0);
  auto expected = x.sizes().vec();
  expected.back() = n;
  TORCH_CHECK(out.sizes() == at::IntArrayRef(expected), "ssdk: out must have shape ", at::IntArrayRef(expected),
              ", got ", shape_str(out));
  return {x.numel() / k, k, n, row_stride(x, "x"), row_stride(out, "out")};
}

bool use_cublas(const at::Tensor& x, const Problem& p) {
  return p.rows > gemv::kMaxRows || x.scalar_type() == at::kFloat;
}

// cuBLAS (torch's matmul): out's [rows, N] view = x's [rows, K] view @ weight^T (+ bias).
void cublas_linear(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, const Problem& p) {
  const at::Tensor x2d = x.as_strided({p.rows, p.k}, {p.x_stride, 1});
  at::Tensor out2d = out.as_strided({p.rows, weight.size(0)}, {p.out_stride, 1});
  if (bias) at::addmm_out(out2d, *bias, x2d, weight.t());
  else at::mm_out(out2d, x2d, weight.t());
}

// The skinny kernel (p.rows <= gemv::kMaxRows); kSwiGlu: p.n outputs from 2 * p.n weight rows.
template <bool kSwiGlu>
void skinny_linear(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, const Problem& p, bool hf_exact) {
  TORCH_CHECK(weight.size(0) < (int64_t{1} << 31) && p.k < (int64_t{1} << 31), "ssdk: weight too large ",
              shape_str(weight));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto run = [&](auto t) {
    using T = decltype(t);
    gemv::LinearArgs<T> a{reinterpret_cast<T*>(out.data_ptr()),
                          reinterpret_cast<const T*>(x.data_ptr()),
                          reinterpret_cast<const T*>(weight.data_ptr()),
                          bias ? reinterpret_cast<const T*>(bias->data_ptr()) : nullptr,
                          p.out_stride,
                          p.x_stride,
                          weight.size(0) == 1 ? p.k : weight.stride(0),
                          static_cast<int>(p.rows),
                          static_cast<int>(p.n),
                          static_cast<int>(p.k),
                          sm_count(x.get_device()),
                          hf_exact};
    check_cuda_call(gemv::launch_skinny_linear<T, kSwiGlu>(a, stream), "linear kernel launch");
  };
  if (x.scalar_type() == at::kHalf) run(__half{});
  else run(__nv_bfloat16{});
}

}  // namespace

void linear(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const Problem p = check_linear(out, x, weight, /*swiglu=*/false);
  if (bias) {
    check_same_device(*bias, x, "bias", "x");
    check_dtype(*bias, x.scalar_type(), "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == p.n, "ssdk: bias must have shape [", p.n, "], got ",
                shape_str(*bias));
    check_contiguous(*bias, "bias");
  }
  if (p.rows == 0 || p.n == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  if (use_cublas(x, p)) cublas_linear(out, x, weight, bias, p);
  else skinny_linear<false>(out, x, weight, bias, p, /*hf_exact=*/false);
}

void linear_silu_mul(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, bool hf_exact) {
  const Problem p = check_linear(out, x, weight, /*swiglu=*/true);
  if (p.rows == 0 || p.n == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  if (!use_cublas(x, p)) return skinny_linear<true>(out, x, weight, std::nullopt, p, hf_exact);
  // linear into a [..., 2n] buffer, then silu_and_mul: the unfused ops, call for call
  auto shape = x.sizes().vec();
  shape.back() = 2 * p.n;
  at::Tensor gate_up = at::empty(shape, x.options());
  cublas_linear(gate_up, x, weight, std::nullopt, {p.rows, p.k, 2 * p.n, p.x_stride, 2 * p.n});
  silu_and_mul(out, gate_up, hf_exact);
}

TORCH_LIBRARY_IMPL(ssdk, CUDA, m) {
  m.impl("linear", &linear);
  m.impl("linear_silu_mul", &linear_silu_mul);
}

// CPU tensors reach the same checks, so direct torch.ops callers get "must be a CUDA tensor".
TORCH_LIBRARY_IMPL(ssdk, CPU, m) {
  m.impl("linear", &linear);
  m.impl("linear_silu_mul", &linear_silu_mul);
}

}  // namespace ssdk
