"""Public kernel API. Each op resolves to cuda -> triton -> torch (see ssdk.ops._backend)."""

from ._backend import get_impl, registered_ops, resolve, use_backend
from .attention import tree_attention
from .norm import fused_add_rmsnorm, rmsnorm
from .activation import silu_and_mul
from .linear import linear, linear_silu_mul
from .kv_cache import store_kv_cache
from .tree import TreeMask, build_tree_mask, packed_mask_bytes, ssd_draft_tree
from .verify import chain_speculative_sampling, probs_from_logits, saguaro_rescale, sample_tokens, verify_chain, \
    verify_tree, verify_tree_greedy
from .rope import apply_llama31_rope_pos_ids_inplace, apply_rope, apply_rope_pos_ids_inplace, \
    apply_rope_with_cos_sin_cache_inplace, qk_norm_rope, rope_cos_sin_cache, rope_inv_freq
from .batch_invariant import batch_invariant_attention, batch_invariant_linear

__all__ = ["TreeMask", "build_tree_mask", "chain_speculative_sampling", "packed_mask_bytes", "probs_from_logits",
           "saguaro_rescale", "sample_tokens", "ssd_draft_tree", "verify_chain", "verify_tree", "verify_tree_greedy",
           "apply_llama31_rope_pos_ids_inplace", "apply_rope", "apply_rope_pos_ids_inplace",
           "apply_rope_with_cos_sin_cache_inplace", "fused_add_rmsnorm", "get_impl", "linear", "linear_silu_mul", "qk_norm_rope",
           "registered_ops", "resolve", "rmsnorm", "rope_cos_sin_cache", "rope_inv_freq", "silu_and_mul",
           "store_kv_cache", "tree_attention", "use_backend", "batch_invariant_attention",
           "batch_invariant_linear"]
