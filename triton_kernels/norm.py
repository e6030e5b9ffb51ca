"""Triton RMSNorm / fused residual-add RMSNorm: one program per row, the row held in registers."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssdk.ops._checks import row_stride


@triton.jit
def _rmsnorm_kernel(out_ptr, x_ptr, res_ptr, w_ptr, out_stride, x_stride, res_stride, hidden, eps,
                    HAS_RESIDUAL: tl.constexpr, HF_EXACT: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        total = x + tl.load(res_ptr + row * res_stride + cols, mask=mask, other=0.0).to(tl.float32)
        rounded = total.to(res_ptr.dtype.element_ty)
        tl.store(res_ptr + row * res_stride + cols, rounded, mask=mask)
        x = rounded.to(tl.float32) if HF_EXACT else total
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / hidden + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    normed = x * rstd
    if HF_EXACT:
        normed = normed.to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * out_stride + cols, (normed * w).to(out_ptr.dtype.element_ty), mask=mask)


def _launch(out: torch.Tensor, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
            eps: float, hf_exact: bool) -> None:
    hidden = x.shape[-1]
    rows = x.numel() // hidden if hidden else 0
    if rows == 0:
        return
    block = triton.next_power_of_2(hidden)
    _rmsnorm_kernel[(rows,)](
        out, x, residual if residual is not None else x, weight,
        row_stride(out), row_stride(x), row_stride(residual) if residual is not None else 0,
        hidden, eps, HAS_RESIDUAL=residual is not None, HF_EXACT=hf_exact, BLOCK=block,
        num_warps=min(16, max(1, block // 256)))


def rmsnorm(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float, hf_exact: bool) -> None:
    _launch(out, x, None, weight, eps, hf_exact)


def fused_add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                      hf_exact: bool) -> None:
    _launch(x, x, residual, weight, eps, hf_exact)
