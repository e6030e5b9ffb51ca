"""Qwen-3 (transformers' Qwen3ForCausalLM): the Llama decoder with per-head q/k RMSNorm before RoPE,
explicit head_dim, theta 1e6 and no rope scaling. ``ModelConfig.qk_norm`` switches the attention to the
fused ``ssdk.ops.qk_norm_rope`` (norm + RoPE + paged KV write in one kernel)."""

from __future__ import annotations

from .llama import LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    pass
