// Launcher for the paged KV-cache store (device code: include/ssdk/kv_cache.cuh).
// Shapes: key/value [T, Hkv, D] (any strides, last dim contiguous); k_cache/v_cache
// [num_pages, page_size, Hkv, D] (page/slot/head strides free, last dim contiguous), same dtype
// (fp32/fp16/bf16); slot_mapping [T] int32/int64, slot = page * page_size + offset, -1 skips.
// Any arch >= sm_70. Reference: ssdk.ref.kv_cache (vLLM reshape_and_cache_flash semantics).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <initializer_list>
#include <utility>

#include "ops.h"
#include "ssdk/kv_cache.cuh"
#include "torch_utils.h"

namespace ssdk {
namespace {

void check_last_dim_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, "ssdk: ", name,
              " must be contiguous in its last dimension, got strides ", c10::str(t.strides()));
}

// Stride of dim d, or 0 where the dim has one element (its stride never matters).
int64_t used_stride(const at::Tensor& t, int d) { return t.size(d) > 1 ? t.stride(d) : 0; }

}  // namespace

void store_kv_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& k_cache, at::Tensor& v_cache,
                    const at::Tensor& slot_mapping) {
  check_cuda(key, "key");
  check_float_dtype(key, "key");
  TORCH_CHECK(key.dim() == 3, "ssdk: key must have shape [num_tokens, num_kv_heads, head_dim], got ", shape_str(key));
  TORCH_CHECK(value.sizes() == key.sizes(), "ssdk: value must have the shape of key ", shape_str(key), ", got ",
              shape_str(value));
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.size(2) == key.size(1) && k_cache.size(3) == key.size(2),
              "ssdk: k_cache must have shape [num_pages, page_size, ", key.size(1), ", ", key.size(2), "], got ",
              shape_str(k_cache));
  TORCH_CHECK(v_cache.sizes() == k_cache.sizes(), "ssdk: v_cache must have the shape of k_cache ",
              shape_str(k_cache), ", got ", shape_str(v_cache));
  TORCH_CHECK(slot_mapping.dim() == 1 && slot_mapping.size(0) == key.size(0), "ssdk: slot_mapping must have shape [",
              key.size(0), "], got ", shape_str(slot_mapping));
  check_dtype_in(slot_mapping, {at::kInt, at::kLong}, "slot_mapping");
  check_contiguous(slot_mapping, "slot_mapping");
  const std::pair<const at::Tensor*, const char*> tensors[] = {
      {&value, "value"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}, {&slot_mapping, "slot_mapping"}};
  for (const auto& [t, name] : tensors) check_same_device(*t, key, name, "key");
  for (const auto& [t, name] : tensors)
    if (t != &slot_mapping) check_dtype(*t, key.scalar_type(), name);
  check_last_dim_contiguous(key, "key");
  for (const auto& [t, name] : tensors)
    if (t != &slot_mapping) check_last_dim_contiguous(*t, name);
  TORCH_CHECK(key.size(0) * key.size(1) * key.size(2) * 2 < (int64_t{1} << 32), "ssdk: key too large ",
              shape_str(key));

  auto run = [&](auto storage) {
    using T = decltype(storage);
    kv_cache::StoreKVArgs<T> a{};
    a.key = reinterpret_cast<const T*>(key.data_ptr());
    a.value = reinterpret_cast<const T*>(value.data_ptr());
    a.k_cache = reinterpret_cast<T*>(k_cache.data_ptr());
    a.v_cache = reinterpret_cast<T*>(v_cache.data_ptr());
    a.k_token_stride = used_stride(key, 0);
    a.k_head_stride = used_stride(key, 1);
    a.v_token_stride = used_stride(value, 0);
    a.v_head_stride = used_stride(value, 1);
    a.kc_page_stride = used_stride(k_cache, 0);
    a.kc_slot_stride = used_stride(k_cache, 1);
    a.kc_head_stride = used_stride(k_cache, 2);
    a.vc_page_stride = used_stride(v_cache, 0);
    a.vc_slot_stride = used_stride(v_cache, 1);
    a.vc_head_stride = used_stride(v_cache, 2);
    a.slot_mapping = slot_mapping.data_ptr();
    a.slots_int64 = slot_mapping.scalar_type() == at::kLong;
    a.page_size = k_cache.size(1);
    a.num_slots = k_cache.size(0) * k_cache.size(1);
    a.num_tokens = static_cast<int>(key.size(0));
    a.num_heads = static_cast<int>(key.size(1));
    a.head_size = static_cast<int>(key.size(2));
    constexpr int64_t kVec = 16 / sizeof(T);
    bool aligned16 = is_aligned(a.key, 16) && is_aligned(a.value, 16) && is_aligned(a.k_cache, 16) &&
                     is_aligned(a.v_cache, 16);
    for (int64_t s : std::initializer_list<int64_t>{a.k_token_stride, a.k_head_stride, a.v_token_stride, a.v_head_stride, a.kc_page_stride,
                      a.kc_slot_stride, a.kc_head_stride, a.vc_page_stride, a.vc_slot_stride, a.vc_head_stride})
      aligned16 = aligned16 && s % kVec == 0;
    const c10::cuda::CUDAGuard guard(key.device());
    check_cuda_call(kv_cache::launch_store_kv_cache<T>(a, aligned16, c10::cuda::getCurrentCUDAStream()),
                    "store_kv_cache kernel launch");
  };
  if (key.element_size() == 4) {
    run(uint32_t{});
  } else {
    run(uint16_t{});
  }
}

TORCH_LIBRARY_IMPL(ssdk, CUDA, m) { m.impl("store_kv_cache", &store_kv_cache); }

// CPU tensors reach the same checks, so direct torch.ops callers get "must be a CUDA tensor".
TORCH_LIBRARY_IMPL(ssdk, CPU, m) {
  m.impl("store_kv_cache", &store_kv_cache);
}

}  // namespace ssdk
