// Launchers for RoPE (vLLM rotary_embedding / FlashInfer pos-ids shapes) and the fused Qwen-3 q/k
// RMSNorm + RoPE (+ paged KV write). Device code: include/ssdk/rope.cuh.
// Shapes: positions [T] int32/int64; query [T, Hq*D] or [T, Hq, D], key likewise with Hkv heads (token
// and head strides free, last dim contiguous); cos_sin_cache [max_position, rot] (cos | sin) fp32 or
// the query dtype, or inv_freq [rot/2] fp32 (pos-ids variant); rot <= D <= 256.
// qk_norm_rope: q_weight/k_weight [D]. rope and qk_norm_rope: optional KV write of the rotated k and v
// (value [T, Hkv(*)D], k_cache/v_cache [pages, page_size, Hkv, D], slot_mapping [T] int32/int64, -1 skips;
// needs key and rot == D). fp32/fp16/bf16; any arch >= sm_70.
// Reference: ssdk.ref.rope (fp32 math); hf_exact matches transformers' apply_rotary_pos_emb bit for bit.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "ops.h"
#include "ssdk/rope.cuh"
#include "torch_utils.h"

namespace ssdk {
namespace {

constexpr int64_t kMaxHeadSize = 256;

// A [tokens, heads, head_size] view of a 2-D [tokens, heads*head_size] or 3-D tensor.
struct Heads {
  int64_t heads, token_stride, head_stride;
};

Heads heads_of(const at::Tensor& t, const char* name, int64_t tokens, int64_t head_size) {
  TORCH_CHECK(t.dim() == 2 || t.dim() == 3, "ssdk: ", name, " must have shape [num_tokens, num_heads * head_size] ",
              "or [num_tokens, num_heads, head_size], got ", shape_str(t));
  TORCH_CHECK(t.size(0) == tokens, "ssdk: ", name, " has ", t.size(0), " tokens but positions has ", tokens);
  TORCH_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, "ssdk: ", name,
              " must be contiguous in its last dimension, got strides ", c10::str(t.strides()));
  const int64_t token_stride = t.size(0) > 1 ? t.stride(0) : 0;
  if (t.dim() == 3) {
    TORCH_CHECK(t.size(2) == head_size, "ssdk: ", name, " last dim must equal head_size=", head_size, ", got ",
                shape_str(t));
    return {t.size(1), token_stride, t.size(1) > 1 ? t.stride(1) : 0};
  }
  TORCH_CHECK(t.size(1) % head_size == 0, "ssdk: ", name, " last dim ", t.size(1),
              " is not a multiple of head_size=", head_size);
  return {t.size(1) / head_size, token_stride, head_size};
}

bool strides_aligned(std::initializer_list<int64_t> strides, int64_t elems) {
  for (int64_t s : strides)
    if (s % elems) return false;
  return true;
}

// Everything the three ops share: positions, query, key, head_size, the angle table.
template <typename T, typename C>
rotary::RopeArgs<T, C> common_args(const at::Tensor& positions, const at::Tensor& query, const at::Tensor* key,
                                 int64_t head_size, int64_t rot_dim, bool hf_exact, bool& aligned16) {
  const int64_t tokens = positions.size(0);
  const Heads q = heads_of(query, "query", tokens, head_size);
  rotary::RopeArgs<T, C> a{};
  a.positions = positions.data_ptr();
  a.positions_int64 = positions.scalar_type() == at::kLong;
  a.query = reinterpret_cast<T*>(query.data_ptr());
  a.q_token_stride = q.token_stride;
  a.q_head_stride = q.head_stride;
  a.num_tokens = static_cast<int>(tokens);
  a.num_q_heads = static_cast<int>(q.heads);
  a.rot_dim = static_cast<int>(rot_dim);
  a.hf_exact = hf_exact;
  constexpr int64_t kVec = 16 / sizeof(T);
  aligned16 = is_aligned(a.query, 16) && strides_aligned({q.token_stride, q.head_stride}, kVec);
  if (key) {
    const Heads k = heads_of(*key, "key", tokens, head_size);
    a.key = reinterpret_cast<T*>(key->data_ptr());
    a.k_token_stride = k.token_stride;
    a.k_head_stride = k.head_stride;
    a.num_kv_heads = static_cast<int>(k.heads);
    aligned16 = aligned16 && is_aligned(a.key, 16) && strides_aligned({k.token_stride, k.head_stride}, kVec);
  }
  TORCH_CHECK(tokens * (q.heads + 2 * a.num_kv_heads) < (int64_t{1} << 31), "ssdk: too many tokens x heads");
  return a;
}

void check_common(const at::Tensor& positions, const at::Tensor& query, const std::optional<at::Tensor>& key,
                  int64_t head_size, const at::Tensor& table, const char* table_name) {
  check_cuda(query, "query");
  check_float_dtype(query, "query");
  check_same_device(positions, query, "positions", "query");
  check_dtype_in(positions, {at::kInt, at::kLong}, "positions");
  TORCH_CHECK(positions.dim() == 1, "ssdk: positions must have shape [num_tokens], got ", shape_str(positions));
  check_contiguous(positions, "positions");
  TORCH_CHECK(head_size >= 2 && head_size <= kMaxHeadSize, "ssdk: head_size must be in [2, ", kMaxHeadSize,
              "], got ", head_size);
  if (key) {
    check_same_device(*key, query, "key", "query");
    check_dtype(*key, query.scalar_type(), "key");
  }
  check_same_device(table, query, table_name, "query");
  check_contiguous(table, table_name);
}

int64_t check_cache(const at::Tensor& cache, const at::Tensor& query, int64_t head_size) {
  TORCH_CHECK(cache.scalar_type() == at::kFloat || cache.scalar_type() == query.scalar_type(),
              "ssdk: cos_sin_cache must be float32 or the dtype of query, got ", cache.scalar_type());
  TORCH_CHECK(cache.dim() == 2 && cache.size(1) % 2 == 0 && cache.size(1) >= 2 && cache.size(1) <= head_size,
              "ssdk: cos_sin_cache must have shape [max_position, rot] with rot even and <= head_size=", head_size,
              ", got ", shape_str(cache));
  return cache.size(1);
}

// Calls f(T{}, C{}) for the query dtype T and the table dtype C (float or T).
template <typename F>
void dispatch_table(const at::Tensor& query, const at::Tensor& table, F&& f) {
  dispatch_float(query.scalar_type(), "query", [&](auto t) {
    using T = decltype(t);
    if (table.scalar_type() == at::kFloat) {
      f(t, float{});
    } else {
      f(t, T{});
    }
  });
}

bool check_kv_args(const std::optional<at::Tensor>& value, const std::optional<at::Tensor>& k_cache,
                   const std::optional<at::Tensor>& v_cache, const std::optional<at::Tensor>& slot_mapping) {
  const bool kv_write = value.has_value();
  TORCH_CHECK(kv_write == k_cache.has_value() && kv_write == v_cache.has_value() && kv_write == slot_mapping.has_value(),
              "ssdk: value, k_cache, v_cache and slot_mapping must be given together");
  return kv_write;
}

// The paged KV write of the fused ops: rotated k and v go to k_cache/v_cache at slot_mapping (-1 skips).
template <typename T, typename C>
void set_kv_write(rotary::RopeArgs<T, C>& a, const at::Tensor& positions, const at::Tensor& query,
                  const at::Tensor& value, const at::Tensor& k_cache, const at::Tensor& v_cache,
                  const at::Tensor& slot_mapping, int64_t head_size, bool& aligned16) {
  TORCH_CHECK(a.rot_dim == head_size, "ssdk: the KV write needs a cos_sin_cache that rotates the whole head "
              "(rot == head_size=", head_size, "), got rot=", a.rot_dim);
  TORCH_CHECK(a.key != nullptr, "ssdk: the KV write needs key");
  const Heads v = heads_of(value, "value", positions.size(0), head_size);
  TORCH_CHECK(v.heads == a.num_kv_heads, "ssdk: value has ", v.heads, " heads but key has ", a.num_kv_heads);
  check_same_device(value, query, "value", "query");
  check_dtype(value, query.scalar_type(), "value");
  for (const auto* cache : {&k_cache, &v_cache}) {
    const char* name = cache == &k_cache ? "k_cache" : "v_cache";
    check_same_device(*cache, query, name, "query");
    check_dtype(*cache, query.scalar_type(), name);
    TORCH_CHECK(cache->dim() == 4 && cache->size(2) == a.num_kv_heads && cache->size(3) == head_size &&
                    cache->sizes() == k_cache.sizes(),
                "ssdk: ", name, " must have shape [num_pages, page_size, ", a.num_kv_heads, ", ", head_size,
                "] (v_cache like k_cache), got ", shape_str(*cache));
    TORCH_CHECK(cache->size(3) <= 1 || cache->stride(3) == 1, "ssdk: ", name,
                " must be contiguous in its last dimension, got strides ", c10::str(cache->strides()));
  }
  check_same_device(slot_mapping, query, "slot_mapping", "query");
  check_dtype_in(slot_mapping, {at::kInt, at::kLong}, "slot_mapping");
  TORCH_CHECK(slot_mapping.dim() == 1 && slot_mapping.size(0) == positions.size(0),
              "ssdk: slot_mapping must have shape [", positions.size(0), "], got ", shape_str(slot_mapping));
  check_contiguous(slot_mapping, "slot_mapping");
  a.value = reinterpret_cast<const T*>(value.data_ptr());
  a.v_token_stride = v.token_stride;
  a.v_head_stride = v.head_stride;
  a.k_cache = reinterpret_cast<T*>(k_cache.data_ptr());
  a.v_cache = reinterpret_cast<T*>(v_cache.data_ptr());
  a.kc_page_stride = k_cache.stride(0);
  a.kc_slot_stride = k_cache.stride(1);
  a.kc_head_stride = k_cache.stride(2);
  a.vc_page_stride = v_cache.stride(0);
  a.vc_slot_stride = v_cache.stride(1);
  a.vc_head_stride = v_cache.stride(2);
  a.slot_mapping = slot_mapping.data_ptr();
  a.slots_int64 = slot_mapping.scalar_type() == at::kLong;
  a.page_size = k_cache.size(1);
  a.num_slots = k_cache.size(0) * k_cache.size(1);
  constexpr int64_t kVec = 16 / sizeof(T);
  aligned16 = aligned16 && is_aligned(a.value, 16) && is_aligned(a.k_cache, 16) && is_aligned(a.v_cache, 16) &&
              strides_aligned({v.token_stride, v.head_stride, a.kc_page_stride, a.kc_slot_stride, a.kc_head_stride,
                               a.vc_page_stride, a.vc_slot_stride, a.vc_head_stride},
                              kVec);
}

template <rotary::Mode MODE, typename T, typename C>
void launch(const rotary::RopeArgs<T, C>& a, bool is_neox, bool aligned16, const at::Tensor& query) {
  const c10::cuda::CUDAGuard guard(query.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const cudaError_t err = is_neox ? rotary::launch_rope<T, C, true, MODE>(a, aligned16, stream)
                                  : rotary::launch_rope<T, C, false, MODE>(a, aligned16, stream);
  check_cuda_call(err, "rope kernel launch");
}

}  // namespace

void rope(const at::Tensor& positions, at::Tensor& query, const std::optional<at::Tensor>& key, int64_t head_size,
          const at::Tensor& cos_sin_cache, bool is_neox, bool hf_exact, const std::optional<at::Tensor>& value,
          const std::optional<at::Tensor>& k_cache, const std::optional<at::Tensor>& v_cache,
          const std::optional<at::Tensor>& slot_mapping) {
  check_common(positions, query, key, head_size, cos_sin_cache, "cos_sin_cache");
  const int64_t rot = check_cache(cos_sin_cache, query, head_size);
  const bool kv_write = check_kv_args(value, k_cache, v_cache, slot_mapping);
  dispatch_table(query, cos_sin_cache, [&](auto t, auto c) {
    using T = decltype(t);
    using C = decltype(c);
    bool aligned16;
    auto a = common_args<T, C>(positions, query, key ? &*key : nullptr, head_size, rot, hf_exact, aligned16);
    a.cos_sin = reinterpret_cast<const C*>(cos_sin_cache.data_ptr());
    a.max_position = cos_sin_cache.size(0);
    if (kv_write) {
      set_kv_write(a, positions, query, *value, *k_cache, *v_cache, *slot_mapping, head_size, aligned16);
      launch<rotary::Mode::kCacheStore>(a, is_neox, aligned16, query);
    } else {
      launch<rotary::Mode::kCache>(a, is_neox, aligned16, query);
    }
  });
}

void rope_pos_ids(const at::Tensor& positions, at::Tensor& query, const std::optional<at::Tensor>& key,
                  int64_t head_size,
                  const at::Tensor& inv_freq, bool is_neox, bool hf_exact) {
  check_common(positions, query, key, head_size, inv_freq, "inv_freq");
  check_dtype(inv_freq, at::kFloat, "inv_freq");
  TORCH_CHECK(inv_freq.dim() == 1 && inv_freq.size(0) >= 1 && 2 * inv_freq.size(0) <= head_size,
              "ssdk: inv_freq must have shape [rot / 2] with rot <= head_size=", head_size, ", got ",
              shape_str(inv_freq));
  dispatch_float(query.scalar_type(), "query", [&](auto t) {
    using T = decltype(t);
    bool aligned16;
    auto a = common_args<T, float>(positions, query, key ? &*key : nullptr, head_size, 2 * inv_freq.size(0),
                                   hf_exact, aligned16);
    a.inv_freq = inv_freq.data_ptr<float>();
    launch<rotary::Mode::kInvFreq>(a, is_neox, aligned16, query);
  });
}

void qk_norm_rope(const at::Tensor& positions, at::Tensor& query, at::Tensor& key, const at::Tensor& q_weight,
                  const at::Tensor& k_weight, double eps, const at::Tensor& cos_sin_cache, bool is_neox,
                  bool hf_exact, const std::optional<at::Tensor>& value, const std::optional<at::Tensor>& k_cache,
                  const std::optional<at::Tensor>& v_cache, const std::optional<at::Tensor>& slot_mapping) {
  TORCH_CHECK(q_weight.dim() == 1, "ssdk: q_weight must have shape [head_size], got ", shape_str(q_weight));
  const int64_t head_size = q_weight.size(0);
  check_common(positions, query, key, head_size, cos_sin_cache, "cos_sin_cache");
  TORCH_CHECK(check_cache(cos_sin_cache, query, head_size) == head_size,
              "ssdk: qk_norm_rope needs a cos_sin_cache that rotates the whole head (rot == head_size=", head_size,
              "), got ", shape_str(cos_sin_cache));
  for (const auto* w : {&q_weight, &k_weight}) {
    const char* name = w == &q_weight ? "q_weight" : "k_weight";
    check_same_device(*w, query, name, "query");
    check_dtype(*w, query.scalar_type(), name);
    TORCH_CHECK(w->dim() == 1 && w->size(0) == head_size, "ssdk: ", name, " must have shape [", head_size, "], got ",
                shape_str(*w));
    check_contiguous(*w, name);
  }
  const bool kv_write = check_kv_args(value, k_cache, v_cache, slot_mapping);
  dispatch_table(query, cos_sin_cache, [&](auto t, auto c) {
    using T = decltype(t);
    using C = decltype(c);
    bool aligned16;
    auto a = common_args<T, C>(positions, query, &key, head_size, head_size, hf_exact, aligned16);
    a.cos_sin = reinterpret_cast<const C*>(cos_sin_cache.data_ptr());
    a.max_position = cos_sin_cache.size(0);
    a.q_weight = reinterpret_cast<const T*>(q_weight.data_ptr());
    a.k_weight = reinterpret_cast<const T*>(k_weight.data_ptr());
    a.eps = static_cast<float>(eps);
    aligned16 = aligned16 && is_aligned(a.q_weight, 16) && is_aligned(a.k_weight, 16);
    if (kv_write) {
      set_kv_write(a, positions, query, *value, *k_cache, *v_cache, *slot_mapping, head_size, aligned16);
    }
    launch<rotary::Mode::kNormCache>(a, is_neox, aligned16, query);
  });
}

TORCH_LIBRARY_IMPL(ssdk, CUDA, m) {
  m.impl("rope", &rope);
  m.impl("rope_pos_ids", &rope_pos_ids);
  m.impl("qk_norm_rope", &qk_norm_rope);
}

// CPU tensors reach the same checks, so direct torch.ops callers get "must be a CUDA tensor".
TORCH_LIBRARY_IMPL(ssdk, CPU, m) {
  m.impl("rope", &rope);
  m.impl("rope_pos_ids", &rope_pos_ids);
  m.impl("qk_norm_rope", &qk_norm_rope);
}

}  // namespace ssdk
