"""RMSNorm with the residual add fused in (transformers' rounding, via ssdk.ops)."""

from __future__ import annotations

import torch
from torch import nn

from ... import ops


class RMSNorm(nn.Module):
    batch_invariant = False  # set by the model runner (EngineConfig.batch_invariant)

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(hidden_size), requires_grad=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """rmsnorm(x); with ``residual``: in place residual += x, x = rmsnorm(residual); returns (x, residual)."""
        if residual is None:
            norm = ops.batch_invariant_rmsnorm if self.batch_invariant else ops.rmsnorm
            return norm(x, self.weight, self.eps, hf_exact=True)
        add_norm = ops.batch_invariant_fused_add_rmsnorm if self.batch_invariant else ops.fused_add_rmsnorm
        add_norm(x, residual, self.weight, self.eps, hf_exact=True)
        return x, residual
