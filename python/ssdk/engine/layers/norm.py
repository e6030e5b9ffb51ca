"""RMSNorm with the residual add fused in (transformers' rounding, via ssdk.ops)."""

from __future__ import annotations

import torch
from torch import nn

from ... import ops


class RMSNorm(nn.Module):
    """Batch invariant as it is: the norm kernels' per-row arithmetic depends only on the hidden size."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(hidden_size), requires_grad=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """rmsnorm(x); with ``residual``: in place residual += x, x = rmsnorm(residual); returns (x, residual)."""
        if residual is None:
            return ops.rmsnorm(x, self.weight, self.eps, hf_exact=True)
        ops.fused_add_rmsnorm(x, residual, self.weight, self.eps, hf_exact=True)
        return x, residual
