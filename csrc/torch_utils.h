// Input checks shared by the launchers. Every message names the argument and what was expected.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <initializer_list>
#include <string>

namespace ssdk {

inline std::string shape_str(const at::Tensor& t) { return c10::str(t.sizes()); }

inline void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "ssdk: ", name, " must be a CUDA tensor, got device ", t.device());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), "ssdk: ", name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device());
}

inline void check_dtype(const at::Tensor& t, at::ScalarType expected, const char* name) {
  TORCH_CHECK(t.scalar_type() == expected, "ssdk: ", name, " must have dtype ", expected, ", got ", t.scalar_type());
}

inline void check_dtype_in(const at::Tensor& t, std::initializer_list<at::ScalarType> allowed, const char* name) {
  for (auto dt : allowed)
    if (t.scalar_type() == dt) return;
  TORCH_CHECK(false, "ssdk: ", name, " has unsupported dtype ", t.scalar_type());
}

inline void check_float_dtype(const at::Tensor& t, const char* name) {
  check_dtype_in(t, {at::kFloat, at::kHalf, at::kBFloat16}, name);
}

inline void check_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_contiguous(), "ssdk: ", name, " must be contiguous, got strides ", c10::str(t.strides()));
}

// Stride between consecutive rows when t is viewed as [rows, t.size(-1)]: the last dim must be
// contiguous and the leading dims must collapse into a single stride.
inline int64_t row_stride(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() >= 1, "ssdk: ", name, " must have at least one dimension");
  TORCH_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, "ssdk: ", name,
              " must be contiguous in its last dimension, got strides ", c10::str(t.strides()));
  // Leading dims of size > 1, innermost first, must nest: stride[outer] == stride[inner] * size[inner].
  int64_t innermost = -1, inner = -1;
  for (int64_t d = t.dim() - 2; d >= 0; --d) {
    if (t.size(d) <= 1) continue;
    TORCH_CHECK(inner < 0 || t.stride(d) == t.stride(inner) * t.size(inner), "ssdk: ", name,
                " leading dimensions must collapse into rows, got shape ", shape_str(t), " strides ",
                c10::str(t.strides()));
    if (innermost < 0) innermost = d;
    inner = d;
  }
  return innermost >= 0 ? t.stride(innermost) : t.size(-1);
}

// Calls f(T{}) with T the CUDA element type of a floating dtype (float, __half, __nv_bfloat16).
template <typename F>
void dispatch_float(at::ScalarType dtype, const char* name, F&& f) {
  switch (dtype) {
    case at::kFloat: f(float{}); break;
    case at::kHalf: f(__half{}); break;
    case at::kBFloat16: f(__nv_bfloat16{}); break;
    default: TORCH_CHECK(false, "ssdk: ", name, " has unsupported dtype ", dtype);
  }
}

inline void check_cuda_call(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "ssdk: ", what, " failed: ", cudaGetErrorString(err));
}

// A device attribute, queried once per device (SM count and L2 size feed launch-shape heuristics).
template <cudaDeviceAttr kAttribute>
inline int device_attribute(int device) {
  static int values[64] = {};
  TORCH_CHECK(device >= 0 && device < 64, "ssdk: device index ", device, " out of range");
  if (values[device] == 0) {
    int v = 0;
    check_cuda_call(cudaDeviceGetAttribute(&v, kAttribute, device), "cudaDeviceGetAttribute");
    values[device] = v;
  }
  return values[device];
}

inline int sm_count(int device) { return device_attribute<cudaDevAttrMultiProcessorCount>(device); }
inline int l2_cache_bytes(int device) { return device_attribute<cudaDevAttrL2CacheSize>(device); }

}  // namespace ssdk
