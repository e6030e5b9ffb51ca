"""Llama-3.x decoder (transformers' LlamaForCausalLM), tensor parallel, paged attention.

Qwen-3 is the same network plus a per-head RMSNorm of q and k before RoPE (``config.qk_norm``); see
qwen3.py. Every op except the GEMMs goes through ssdk.ops with transformers' rounding, so greedy output
matches transformers token for token.
"""

from __future__ import annotations

import torch
from torch import nn

from ... import ops
from ..config import ModelConfig
from ..context import get_context
from ..layers.activation import SiluAndMul
from ..layers.attention import Attention
from ..layers.embed_head import ParallelLMHead, VocabParallelEmbedding
from ..layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from ..layers.norm import RMSNorm
from ..layers.rotary import RotaryEmbedding
from ..parallel import current_tp


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding):
        super().__init__()
        tp = current_tp().size
        d = config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads // tp, config.num_kv_heads // tp, d
        self.qkv_proj = QKVParallelLinear(config.hidden_size, d, config.num_heads, config.num_kv_heads,
                                          bias=config.attention_bias)
        self.o_proj = RowParallelLinear(config.num_heads * d, config.hidden_size, bias=False)
        self.rotary = (rotary,)  # shared table, not a submodule of every layer
        self.attn = Attention(self.num_heads, self.num_kv_heads, d, d ** -0.5)
        self.eps = config.rms_norm_eps
        if config.qk_norm:
            self.q_norm = RMSNorm(d, config.rms_norm_eps)
            self.k_norm = RMSNorm(d, config.rms_norm_eps)

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        rotary, ctx = self.rotary[0], get_context()
        if hasattr(self, "q_norm"):  # Qwen-3: norm + RoPE + KV write in one kernel
            ops.qk_norm_rope(positions, q, k, self.q_norm.weight, self.k_norm.weight, self.eps,
                             rotary.cos_sin_cache, is_neox=True, hf_exact=True, value=v, k_cache=self.attn.k_cache,
                             v_cache=self.attn.v_cache, slot_mapping=ctx.slot_mapping)
        else:  # Llama: RoPE + KV write in one kernel
            rotary(positions, q, k, kv_write=(v, self.attn.k_cache, self.attn.v_cache, ctx.slot_mapping))
        out = self.attn(q, k, v, kv_stored=True)
        return self.o_proj(out.view(-1, q_size))


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        inter = config.intermediate_size
        self.gate_up_proj = MergedColumnParallelLinear(config.hidden_size, [inter, inter], bias=False)
        self.down_proj = RowParallelLinear(inter, config.hidden_size, bias=False)
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two launches on purpose: ops.linear_silu_mul (one kernel, same bits) made the Llama-3.1-8B B=1 step
        # 0.05 ms slower on H100 (docs/kernel_notes.md, "Skinny linear" round 3).
        return self.down_proj(self.act(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding):
        super().__init__()
        self.self_attn = LlamaAttention(config, rotary)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, positions: torch.Tensor, x: torch.Tensor, residual: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(positions, x)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, max_position: int, device: torch.device | str | None = None):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.rotary = RotaryEmbedding(config.head_dim, max_position, config.rope_theta, config.rope_scaling, device)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, self.rotary) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            x, residual = layer(positions, x, residual)
        x, _ = self.norm(x, residual)
        return x


class LlamaForCausalLM(nn.Module):
    # checkpoint name -> (parameter of this model, shard id) for the fused projections
    packed_modules_mapping = {
        "q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, config: ModelConfig, max_position: int, device: torch.device | str | None = None):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, max_position, device)
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[N] token ids and positions -> [N, hidden] final hidden states."""
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[M, hidden] -> [M, vocab] logits (model dtype, full vocabulary on every rank)."""
        return self.lm_head(hidden)
