"""Rotary embedding table (one per model) applied through ssdk.ops."""

from __future__ import annotations

import torch
from torch import nn

from ... import ops


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_position: int, theta: float, rope_scaling: dict | None,
                 device: torch.device | str | None = None):
        super().__init__()
        self.head_dim = head_dim
        # inv_freq on the CPU, angles and cos/sin on the model's device: transformers' order of operations
        # (the CPU context undoes a device context the model may be built under).
        with torch.device("cpu"):
            cache = ops.rope_cos_sin_cache(head_dim, max_position, theta, rope_scaling, dtype=torch.float32,
                                           device=device)
        self.register_buffer("cos_sin_cache", cache, persistent=False)

    def forward(self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor,
                kv_write: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> None:
        """Rotate query [T, Hq, D] and key [T, Hkv, D] in place (neox pairs, transformers' rounding);
        ``kv_write`` = (value, k_cache, v_cache, slot_mapping) also stores the rotated k and v in the
        paged cache in the same kernel."""
        value, k_cache, v_cache, slot_mapping = kv_write or (None, None, None, None)
        ops.apply_rope(positions, query, key, self.head_dim, self.cos_sin_cache, is_neox=True, hf_exact=True,
                       value=value, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping)
