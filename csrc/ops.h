// C++ signatures of every ssdk op; schemas live in ops.cpp, CUDA implementations in csrc/*.cu.
#pragma once
#include <ATen/core/Tensor.h>

namespace ssdk {

// norm.cu
void rmsnorm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight, double eps, bool hf_exact);
void fused_add_rmsnorm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight, double eps,
                       bool hf_exact);

}  // namespace ssdk
