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
          const at::Tensor& cos_sin_cache, bool is_neox, bool hf_exact, const std::optional<at::Tensor>& value,
          const std::optional<at::Tensor>& k_cache, const std::optional<at::Tensor>& v_cache,
          const std::optional<at::Tensor>& slot_mapping);
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

// tree_mask.cu
void build_tree_mask(const at::Tensor& parents, const at::Tensor& qo_indptr, const at::Tensor& prefix_lens,
                     at::Tensor& positions, at::Tensor& depth, at::Tensor& tree_mask,
                     const std::optional<at::Tensor>& packed_mask, const std::optional<at::Tensor>& mask_indptr,
                     int64_t packed_rows);

// verify.cu
void sample_tokens(at::Tensor& out, const at::Tensor& logits, const at::Tensor& temperature,
                   const std::optional<at::Tensor>& top_k, const std::optional<at::Tensor>& top_p,
                   const std::optional<at::Tensor>& saguaro_x, int64_t saguaro_f, int64_t seed, int64_t offset,
                   const std::optional<at::Tensor>& offset_tensor);
void probs_from_logits(at::Tensor& out, const at::Tensor& logits, const at::Tensor& temperature,
                       const std::optional<at::Tensor>& top_k, const std::optional<at::Tensor>& top_p,
                       const std::optional<at::Tensor>& saguaro_x, int64_t saguaro_f);
void saguaro_rescale(at::Tensor& out, const at::Tensor& probs, const at::Tensor& x, int64_t F);
void chain_speculative_sampling(at::Tensor& output_token_ids, at::Tensor& accepted_num, at::Tensor& emitted_num,
                                const at::Tensor& draft_probs, const at::Tensor& draft_token_ids,
                                const at::Tensor& target_probs, int64_t seed, int64_t offset,
                                const std::optional<at::Tensor>& offset_tensor);
void verify_chain(at::Tensor& out_tokens, at::Tensor& accept_len, const at::Tensor& target_logits,
                  const at::Tensor& draft_token_ids, const std::optional<at::Tensor>& draft_logits,
                  const std::optional<at::Tensor>& draft_probs, const std::optional<at::Tensor>& temperature,
                  const std::optional<at::Tensor>& top_k, const std::optional<at::Tensor>& top_p,
                  const std::optional<at::Tensor>& saguaro_x, int64_t saguaro_f, int64_t seed, int64_t offset,
                  const std::optional<at::Tensor>& offset_tensor);
void verify_tree(at::Tensor& accept_len, at::Tensor& accept_nodes, at::Tensor& out_tokens, const at::Tensor& target_logits,
                 const at::Tensor& tokens, const at::Tensor& parents, const at::Tensor& qo_indptr,
                 const std::optional<at::Tensor>& temperature, const std::optional<at::Tensor>& top_k,
                 const std::optional<at::Tensor>& top_p, int64_t seed, int64_t offset,
                 const std::optional<at::Tensor>& offset_tensor);
void verify_tree_greedy(at::Tensor& predicts, at::Tensor& accept_index, at::Tensor& accept_token_num,
                        const at::Tensor& candidates, const at::Tensor& retrive_index,
                        const at::Tensor& retrive_next_token, const at::Tensor& retrive_next_sibling,
                        const at::Tensor& target_predict);

// tree_attention.cu
void tree_attention(at::Tensor& out, const std::optional<at::Tensor>& lse, const at::Tensor& q, const at::Tensor& k_cache,
                    const at::Tensor& v_cache, const at::Tensor& block_tables, const at::Tensor& prefix_lens,
                    const at::Tensor& qo_indptr, const std::optional<at::Tensor>& tree_mask, int64_t max_q_len,
                    double sm_scale, int64_t num_kv_splits);

// linear.cu
void linear(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);
void linear_silu_mul(at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, bool hf_exact);

}  // namespace ssdk
