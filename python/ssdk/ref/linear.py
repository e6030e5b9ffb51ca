"""Reference linear layer (fp32 math; see ssdk.ops.linear for semantics)."""

from __future__ import annotations

import torch

from .activation import silu_and_mul


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight[N, K]^T (+ bias [N]) -> [..., N] in x.dtype: fp32 products and sums, one rounding."""
    y = x.float() @ weight.float().t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def linear_out(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Out-variant adaptor with the op schema's signature (the torch backend)."""
    out.copy_(linear(x, weight, bias))


def linear_silu_mul(x: torch.Tensor, weight: torch.Tensor, hf_exact: bool = False) -> torch.Tensor:
    """silu_and_mul(linear(x, weight), hf_exact) for weight [2I, K] = [gate | up]: [..., I] in x.dtype (gate
    and up each rounded to x.dtype first, as the unfused ops write them)."""
    return silu_and_mul(linear(x, weight), hf_exact)


def linear_silu_mul_out(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, hf_exact: bool) -> None:
    """Out-variant adaptor with the op schema's signature (the torch backend)."""
    out.copy_(linear_silu_mul(x, weight, hf_exact))
