"""Triton linear: out = x @ weight^T (+ bias), fp32 accumulation (see ssdk.ref.linear); linear_silu_mul as
linear then silu_and_mul.

Up to 8 rows of x (decode): a GEMV — each program streams a [BLOCK_N, BLOCK_K] weight tile once and
multiplies it with all rows of x on the CUDA cores (exact fp32 products). More rows: tensor-core tiles of
16 x BLOCK_N (tl.dot, fp32 accumulation; "ieee" precision for fp32 inputs).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ssdk.ops._checks import row_stride

from .activation import silu_and_mul

GEMV_MAX_ROWS = 8


@triton.jit
def linear_tile(out_ptr, x_ptr, w_ptr, b_ptr, rm, rn, M, N, K, stride_om, stride_xm, stride_wn,
                HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[rm, rn] = x[rm] @ w[rn]^T (+ b[rn]): one fp32 accumulator per element walked over K in BLOCK_K
    steps, tensor-core products (tl.dot; "ieee" when IEEE) or exact fp32 CUDA-core products."""
    rk = tl.arange(0, BLOCK_K)
    m_ok, n_ok = rm < M, rn < N
    x_ptrs = x_ptr + rm.to(tl.int64)[:, None] * stride_xm + rk[None, :]
    w_ptrs = w_ptr + rn.to(tl.int64)[:, None] * stride_wn + rk[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = rk < K - k0
        x = tl.load(x_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        if USE_DOT:
            if IEEE:
                acc = tl.dot(x, tl.trans(w), acc, input_precision="ieee")
            else:
                acc = tl.dot(x, tl.trans(w), acc)
        else:
            acc += tl.sum(x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + rm.to(tl.int64)[:, None] * stride_om + rn[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _linear_kernel(out_ptr, x_ptr, w_ptr, b_ptr, M, N, K, stride_om, stride_xm, stride_wn,
                   HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    linear_tile(out_ptr, x_ptr, w_ptr, b_ptr, rm, rn, M, N, K, stride_om, stride_xm, stride_wn, HAS_BIAS, USE_DOT,
                IEEE, BLOCK_M, BLOCK_N, BLOCK_K)


def linear(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Out-variant launcher: out [..., N] = x [..., K] @ weight[N, K]^T (+ bias [N])."""
    n, k = weight.shape
    m = x.numel() // k
    if m == 0 or n == 0:
        return
    # The CPU interpreter has no tensor cores to emulate faithfully for bf16: CUDA-core products there.
    interpret = os.environ.get("TRITON_INTERPRET") == "1" and x.device.type == "cpu"
    use_dot = m > GEMV_MAX_ROWS and not interpret
    if use_dot:
        block_m, block_n, block_k = 16, 64, 64
    else:
        block_m = min(triton.next_power_of_2(m), GEMV_MAX_ROWS) if m <= GEMV_MAX_ROWS else 16
        block_n = 16  # N = 4096 -> 256 programs: two per SM on a 132-SM GPU
        block_k = min(max(16, triton.next_power_of_2(k)), 16384 // (block_m * block_n))
    grid = (triton.cdiv(n, block_n), triton.cdiv(m, block_m))
    _linear_kernel[grid](out, x, weight, bias if bias is not None else weight, m, n, k, row_stride(out),
                         row_stride(x), weight.stride(0), HAS_BIAS=bias is not None, USE_DOT=use_dot,
                         IEEE=x.dtype == torch.float32, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                         num_warps=4)


def linear_silu_mul(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, hf_exact: bool) -> None:
    """Out-variant launcher of the unfused form: gate_up = x @ weight^T ([..., 2I]), then silu_and_mul."""
    gate_up = torch.empty((*x.shape[:-1], weight.shape[0]), dtype=x.dtype, device=x.device)
    linear(gate_up, x, weight, None)
    silu_and_mul(out, gate_up, hf_exact)
