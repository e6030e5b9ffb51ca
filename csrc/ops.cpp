// Every ssdk operator schema, in one place. Mutated arguments are marked Tensor(a!); out-variants
// return (). CUDA kernels register under TORCH_LIBRARY_IMPL(ssdk, CUDA, m) in their own .cu file.
// The pybind11 module _C only carries build facts; importing it loads the registrations.
#include <pybind11/pybind11.h>
#include <torch/library.h>

TORCH_LIBRARY(ssdk, m) {
  // ---- norm.cu
  m.def("rmsnorm(Tensor(a!) out, Tensor input, Tensor weight, float eps, bool hf_exact) -> ()");
  m.def("fused_add_rmsnorm(Tensor(a!) input, Tensor(b!) residual, Tensor weight, float eps, bool hf_exact) -> ()");
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "ssdk CUDA kernels; the operators live in torch.ops.ssdk";
  m.attr("torch_version") = SSDK_TORCH_VERSION;
  m.attr("cuda_archs") = SSDK_CUDA_ARCHS;
}
