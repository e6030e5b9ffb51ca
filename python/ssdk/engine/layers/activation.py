"""SwiGLU activation through ssdk.ops."""

from __future__ import annotations

import torch
from torch import nn

from ... import ops


class SiluAndMul(nn.Module):
    """[gate | up] -> silu(gate) * up, rounded like transformers' ``act_fn(gate) * up``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.silu_and_mul(x, hf_exact=True)
