// Every ssdk operator schema, in one place. Mutated arguments are marked Tensor(a!); out-variants
// return (). CUDA kernels register under TORCH_LIBRARY_IMPL(ssdk, CUDA, m) in their own .cu file.
// The pybind11 module _C only carries build facts; importing it loads the registrations.
#include <pybind11/pybind11.h>
#include <torch/library.h>

TORCH_LIBRARY(ssdk, m) {
  // ---- norm.cu
  m.def("rmsnorm(Tensor(a!) out, Tensor input, Tensor weight, float eps, bool hf_exact) -> ()");
  m.def("fused_add_rmsnorm(Tensor(a!) input, Tensor(b!) residual, Tensor weight, float eps, bool hf_exact) -> ()");
  // ---- rope.cu
  m.def("rope(Tensor positions, Tensor(a!) query, Tensor(b!)? key, int head_size, Tensor cos_sin_cache, bool is_neox, "
        "bool hf_exact, Tensor? value=None, Tensor(c!)? k_cache=None, Tensor(d!)? v_cache=None, "
        "Tensor? slot_mapping=None) -> ()");
  m.def("rope_pos_ids(Tensor positions, Tensor(a!) query, Tensor(b!)? key, int head_size, Tensor inv_freq, "
        "bool is_neox, bool hf_exact) -> ()");
  m.def("qk_norm_rope(Tensor positions, Tensor(a!) query, Tensor(b!) key, Tensor q_weight, Tensor k_weight, float eps, "
        "Tensor cos_sin_cache, bool is_neox, bool hf_exact, Tensor? value, Tensor(c!)? k_cache, Tensor(d!)? v_cache, "
        "Tensor? slot_mapping) -> ()");
  // ---- activation.cu
  m.def("silu_and_mul(Tensor(a!) out, Tensor input, bool hf_exact) -> ()");
  // ---- kv_cache.cu
  m.def("store_kv_cache(Tensor key, Tensor value, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping) -> ()");
  // ---- tree_mask.cu
  m.def("build_tree_mask(Tensor parents, Tensor qo_indptr, Tensor prefix_lens, Tensor(a!) positions, Tensor(b!) depth, "
        "Tensor(c!) tree_mask, Tensor(d!)? packed_mask, Tensor(e!)? mask_indptr, int packed_rows) -> ()");
  // ---- verify.cu
  m.def("sample_tokens(Tensor(a!) out, Tensor logits, Tensor temperature, Tensor? top_k, Tensor? top_p, "
        "Tensor? saguaro_x, int saguaro_f, int seed, int offset, Tensor? offset_tensor) -> ()");
  m.def("probs_from_logits(Tensor(a!) out, Tensor logits, Tensor temperature, Tensor? top_k, Tensor? top_p, "
        "Tensor? saguaro_x, int saguaro_f) -> ()");
  m.def("saguaro_rescale(Tensor(a!) out, Tensor probs, Tensor x, int F) -> ()");
  m.def("chain_speculative_sampling(Tensor(a!) output_token_ids, Tensor(b!) accepted_num, Tensor(c!) emitted_num, "
        "Tensor draft_probs, Tensor draft_token_ids, Tensor target_probs, int seed, int offset, Tensor? offset_tensor) -> ()");
  m.def("verify_chain(Tensor(a!) out_tokens, Tensor(b!) accept_len, Tensor target_logits, Tensor draft_token_ids, "
        "Tensor? draft_logits, Tensor? draft_probs, Tensor? temperature, Tensor? top_k, Tensor? top_p, Tensor? saguaro_x, "
        "int saguaro_f, int seed, int offset, Tensor? offset_tensor) -> ()");
  m.def("verify_tree(Tensor(a!) accept_len, Tensor(b!) accept_nodes, Tensor(c!) out_tokens, Tensor target_logits, "
        "Tensor tokens, Tensor parents, Tensor qo_indptr, Tensor? temperature, Tensor? top_k, Tensor? top_p, int seed, "
        "int offset, Tensor? offset_tensor) -> ()");
  m.def("verify_tree_greedy(Tensor(a!) predicts, Tensor(b!) accept_index, Tensor(c!) accept_token_num, Tensor candidates, "
        "Tensor retrive_index, Tensor retrive_next_token, Tensor retrive_next_sibling, Tensor target_predict) -> ()");
  // ---- tree_attention.cu
  m.def("tree_attention(Tensor(a!) out, Tensor(b!)? lse, Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, "
        "Tensor prefix_lens, Tensor qo_indptr, Tensor? tree_mask, int max_q_len, float sm_scale, int num_kv_splits) -> ()");
  // ---- linear.cu
  m.def("linear(Tensor(a!) out, Tensor x, Tensor weight, Tensor? bias) -> ()");
  m.def("linear_silu_mul(Tensor(a!) out, Tensor x, Tensor weight, bool hf_exact) -> ()");
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "ssdk CUDA kernels; the operators live in torch.ops.ssdk";
  m.attr("torch_version") = SSDK_TORCH_VERSION;
  m.attr("cuda_archs") = SSDK_CUDA_ARCHS;
}
