"""Triton silu_and_mul: program (row, column block); fp32 math (see ssdk.ref.activation)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssdk.ops._checks import row_stride


@triton.jit
def _silu_and_mul_kernel(out_ptr, x_ptr, out_stride, x_stride, d, HF_EXACT: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < d
    gate = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * x_stride + d + cols, mask=mask, other=0.0).to(tl.float32)
    act = gate / (1.0 + tl.exp(-gate))
    if HF_EXACT:
        act = act.to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * out_stride + cols, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(out: torch.Tensor, x: torch.Tensor, hf_exact: bool) -> None:
    d = out.shape[-1]
    rows = out.numel() // d if d else 0
    if rows == 0:
        return
    block = min(1024, triton.next_power_of_2(d))
    _silu_and_mul_kernel[(rows, triton.cdiv(d, block))](out, x, row_stride(out), row_stride(x), d, HF_EXACT=hf_exact,
                                                         BLOCK=block, num_warps=4)
