"""Reference RMSNorm / fused residual-add RMSNorm (fp32 math, see ssdk.ops.norm for semantics)."""

from __future__ import annotations

import torch


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float, hf_exact: bool = False) -> torch.Tensor:
    """Return rmsnorm(x) * weight in x.dtype.

    hf_exact rounds the normalized value to x.dtype before the weight multiply (transformers'
    LlamaRMSNorm); otherwise one rounding at the end (FlashInfer/vLLM).
    """
    xf = x.float()
    normed = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    if hf_exact:
        return (normed.to(x.dtype).float() * weight.float()).to(x.dtype)
    return (normed * weight.float()).to(x.dtype)


def fused_add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                      hf_exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (rmsnorm(x + residual) * weight, x + residual), both in x.dtype.

    The stored residual is always rounded to x.dtype; hf_exact normalizes that rounded sum (HF adds in
    the model dtype), otherwise the fp32 sum (FlashInfer).
    """
    total = x.float() + residual.float()
    new_residual = total.to(x.dtype)
    source = new_residual if hf_exact else total
    return rmsnorm(source, weight, eps, hf_exact).to(x.dtype), new_residual


# Out-variant adaptors with the op schemas' signatures (the torch backend).
def rmsnorm_out(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float, hf_exact: bool) -> None:
    out.copy_(rmsnorm(x, weight, eps, hf_exact))


def fused_add_rmsnorm_inplace(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                              hf_exact: bool) -> None:
    normed, new_residual = fused_add_rmsnorm(x, residual, weight, eps, hf_exact)
    residual.copy_(new_residual)
    x.copy_(normed)
