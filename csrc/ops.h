// C++ signatures of every ssdk op; schemas live in ops.cpp, CUDA implementations in csrc/*.cu.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace ssdk {

// norm.cu
void rmsnorm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight, double eps, bool hf_exact);
void fused_add_rmsnorm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight, double eps,
                       bool hf_exact);

// rope.cu
void rope(const at::Tensor& positions, at::Tensor& query, const std::optional<at::Tensor>& key, int64_t head_size,
          const at::Tensor& cos_sin_cache, bool is_neox, bool hf_exact);
void rope_pos_ids(const at::Tensor& positions, at::Tensor& query, const std::optional<at::Tensor>& key,
                  int64_t head_size, const at::Tensor& inv_freq, bool is_neox, bool hf_exact);
void qk_norm_rope(const at::Tensor& positions, at::Tensor& query, at::Tensor& key, const at::Tensor& q_weight,
                  const at::Tensor& k_weight, double eps, const at::Tensor& cos_sin_cache, bool is_neox,
                  bool hf_exact, const std::optional<at::Tensor>& value, const std::optional<at::Tensor>& k_cache,
                  const std::optional<at::Tensor>& v_cache, const std::optional<at::Tensor>& slot_mapping);

// activation.cu
void silu_and_mul(at::Tensor& out, const at::Tensor& input, bool hf_exact);

// kv_cache.cu
void store_kv_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& k_cache, at::Tensor& v_cache,
                    const at::Tensor& slot_mapping);

// tree_attention.cu
void tree_attention(at::Tensor& out, const std::optional<at::Tensor>& lse, const at::Tensor& q, const at::Tensor& k_cache,
                    const at::Tensor& v_cache, const at::Tensor& block_tables, const at::Tensor& prefix_lens,
                    const at::Tensor& qo_indptr, const std::optional<at::Tensor>& tree_mask, int64_t max_q_len,
                    double sm_scale, int64_t num_kv_splits);

}  // namespace ssdk
