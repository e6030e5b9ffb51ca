"""Paged attention layer: store the new K/V, attend through ssdk.ops.tree_attention (or FlashInfer)."""

from __future__ import annotations

import torch
from torch import nn

from ... import ops
from ..context import get_context


class Attention(nn.Module):
    """Reads the batch layout from the attention context; ``k_cache``/``v_cache`` are set by the runner
    ([num_pages, page_size, num_kv_heads, head_dim] views of its KV-cache tensor)."""

    batch_invariant = False  # set by the model runner (EngineConfig.batch_invariant)

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim, self.scale = num_heads, num_kv_heads, head_dim, scale
        self.k_cache = self.v_cache = torch.empty(0)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_stored: bool = False) -> torch.Tensor:
        """q [N, Hq, D], k/v [N, Hkv, D] (any row strides) -> [N, Hq, D]. ``kv_stored``: a fused op already
        wrote k/v into the cache."""
        ctx = get_context()
        if not kv_stored:
            ops.store_kv_cache(k, v, self.k_cache, self.v_cache, ctx.slot_mapping)
        if ctx.flashinfer is not None:
            return ctx.flashinfer.run(q, (self.k_cache, self.v_cache))
        if self.batch_invariant:
            return ops.batch_invariant_attention(q, self.k_cache, self.v_cache, ctx.block_tables, ctx.prefix_lens,
                                                 ctx.qo_indptr, ctx.tree_mask, max_q_len=ctx.max_q_len,
                                                 sm_scale=self.scale)
        return ops.tree_attention(q, self.k_cache, self.v_cache, ctx.block_tables, ctx.prefix_lens, ctx.qo_indptr,
                                  ctx.tree_mask, max_q_len=ctx.max_q_len, sm_scale=self.scale)
