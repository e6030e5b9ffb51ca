// Paged KV-cache store (vLLM reshape_and_cache_flash): for each token t with slot s = slot_mapping[t] >= 0,
//   k_cache[s / page_size, s % page_size, h, :] = key[t, h, :]   (and v likewise).
// Cache [num_pages, page_size, Hkv, D] (FlashInfer NHD), page/slot/head strides free, last dim contiguous.
// A pure copy: T is a storage type of the element size. Slots >= num_slots are skipped (no host sync).
// One thread per (token, k-or-v, head, W-element chunk); W = 16 bytes of T when every stride allows it.
#pragma once
#include "ssdk/common.cuh"

namespace ssdk::kv_cache {

template <typename T>
struct StoreKVArgs {
  const T* key;    // [tokens, heads, D] strided
  const T* value;
  T* k_cache;      // [pages, page_size, heads, D] strided
  T* v_cache;
  int64_t k_token_stride, k_head_stride, v_token_stride, v_head_stride;
  int64_t kc_page_stride, kc_slot_stride, kc_head_stride, vc_page_stride, vc_slot_stride, vc_head_stride;
  const void* slot_mapping;  // [tokens] int32 or int64
  bool slots_int64;
  int64_t page_size, num_slots;
  int num_tokens, num_heads, head_size;
};

template <typename T, int W>
__global__ void store_kv_cache_kernel(StoreKVArgs<T> a, unsigned chunks_per_head, unsigned total) {
  using V = Vec<T, W>;
  const unsigned gid = blockIdx.x * blockDim.x + threadIdx.x;
  if (gid >= total) return;
  const unsigned per_token = 2u * a.num_heads * chunks_per_head;
  const unsigned token = gid / per_token;
  unsigned rest = gid - token * per_token;
  const unsigned head2 = rest / chunks_per_head;  // [0, heads): k, [heads, 2 heads): v
  const unsigned col = (rest - head2 * chunks_per_head) * W;
  const bool is_v = head2 >= unsigned(a.num_heads);
  const unsigned head = is_v ? head2 - a.num_heads : head2;
  const T* src = is_v ? a.value + token * a.v_token_stride + head * a.v_head_stride
                      : a.key + token * a.k_token_stride + head * a.k_head_stride;
  V x;
  pdl_wait();  // key/value and slot_mapping may come from the previous kernel
  pdl_launch_dependents();
  x.load(src + col);
  const int64_t slot = a.slots_int64 ? static_cast<const int64_t*>(a.slot_mapping)[token]
                                     : static_cast<const int32_t*>(a.slot_mapping)[token];
  if (slot < 0 || slot >= a.num_slots) return;
  const int64_t page = slot / a.page_size, offset = slot - page * a.page_size;
  T* dst = is_v ? a.v_cache + page * a.vc_page_stride + offset * a.vc_slot_stride + head * a.vc_head_stride
                : a.k_cache + page * a.kc_page_stride + offset * a.kc_slot_stride + head * a.kc_head_stride;
  x.store(dst + col);
}

template <typename T>
cudaError_t launch_store_kv_cache(const StoreKVArgs<T>& a, bool aligned16, cudaStream_t stream) {
  if (a.num_tokens == 0 || a.num_heads == 0 || a.head_size == 0) return cudaSuccess;
  constexpr int kVec = 16 / sizeof(T);
  const bool vectorizable = aligned16 && a.head_size % kVec == 0;
  const int w = vectorizable ? kVec : 1;
  const uint64_t chunks = a.head_size / w, total = chunks * 2 * a.num_heads * a.num_tokens;
  if (total >= (uint64_t{1} << 32)) return cudaErrorInvalidValue;
  const int block = total <= 128 * 132 ? 128 : 256;
  const unsigned grid = static_cast<unsigned>((total + block - 1) / block);
  // Programmatic dependent launch: the launch overlaps the previous kernel's tail on sm_90.
  if (vectorizable)
    return launch_pdl(store_kv_cache_kernel<T, kVec>, dim3(grid), dim3(block), 0, stream, a, unsigned(chunks),
                      unsigned(total));
  return launch_pdl(store_kv_cache_kernel<T, 1>, dim3(grid), dim3(block), 0, stream, a, unsigned(chunks),
                    unsigned(total));
}

}  // namespace ssdk::kv_cache
