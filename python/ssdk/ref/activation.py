"""Reference gated activation (fp32 math; see ssdk.ops.activation for semantics)."""

from __future__ import annotations

import torch


def silu(x: torch.Tensor) -> torch.Tensor:
    """x / (1 + exp(-x)) in x's dtype arithmetic: the formula of PyTorch's silu kernels."""
    return x / (1 + torch.exp(-x))


def silu_and_mul(x: torch.Tensor, hf_exact: bool = False) -> torch.Tensor:
    """x [..., 2d] = [gate | up] -> silu(gate) * up [..., d] in x.dtype.

    hf_exact rounds silu(gate) to x.dtype before the multiply (transformers' act_fn(gate) * up);
    otherwise one rounding at the end (vLLM / FlashInfer).
    """
    gate, up = x.float().chunk(2, dim=-1)
    activated = silu(gate)
    if hf_exact:
        activated = activated.to(x.dtype).float()
    return (activated * up).to(x.dtype)


def silu_and_mul_out(out: torch.Tensor, x: torch.Tensor, hf_exact: bool) -> None:
    """Out-variant adaptor with the op schema's signature (the torch backend)."""
    out.copy_(silu_and_mul(x, hf_exact))
