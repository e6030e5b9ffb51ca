"""Linear layer ``x @ weight^T + bias`` (torch.nn.functional.linear) with a skinny-M CUDA kernel for decode,
and ``linear_silu_mul``: the gate_up projection and SwiGLU of an MLP in one kernel.

Routing of the CUDA backend (csrc/linear.cu): fp16/bf16 inputs with at most ``SKINNY_MAX_ROWS`` rows of x
(the product of x's leading dims) run the GEMV-style kernel of include/ssdk/linear.cuh (weight streamed
once, fp32 accumulation, one rounding); more rows, or fp32, go to cuBLAS (``at::mm_out`` /
``at::addmm_out``, i.e. torch's matmul). The Triton backend covers every row count with one kernel.
``linear_silu_mul`` takes the same kernel with a SwiGLU epilogue on the skinny route (bit for bit
``silu_and_mul(linear(x, weight))``), and runs exactly those two ops otherwise.
"""

from __future__ import annotations

import torch

from .. import _C
from ..ref import linear as ref
from . import _backend
from ._checks import FLOAT_DTYPES, check_dtype, check_rows, check_same_device, check_same_dtype, check_shape, \
    check_tensor, out_or_new

SKINNY_MAX_ROWS = 4  # gemv::kMaxRows in csrc/include/ssdk/linear.cuh (measured crossover with cuBLAS)


def check_linear_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      dtypes: tuple[torch.dtype, ...]) -> None:
    """The argument checks of the linear ops: x [..., K] (K >= 1, rows collapsible, dtype in ``dtypes``),
    weight [N, K] of x's dtype and device with a contiguous last dim, bias [N] contiguous or None."""
    check_tensor(x, "x")
    check_dtype(x, "x", dtypes)
    check_rows(x, "x")
    if x.shape[-1] == 0:
        raise ValueError(f"ssdk: x must have a last dimension K >= 1, got shape {tuple(x.shape)}")
    check_tensor(weight, "weight")
    check_same_device(weight, "weight", x, "x")
    check_same_dtype(weight, "weight", x, "x")
    if weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"ssdk: weight must have shape [N, {x.shape[-1]}], got {tuple(weight.shape)}")
    if weight.shape[1] > 1 and weight.stride(1) != 1:
        raise ValueError(f"ssdk: weight must be contiguous in its last dimension, got strides {weight.stride()}")
    if bias is not None:
        check_tensor(bias, "bias")
        check_same_device(bias, "bias", x, "x")
        check_same_dtype(bias, "bias", x, "x")
        check_shape(bias, "bias", (weight.shape[0],))
        if not bias.is_contiguous():
            raise ValueError(f"ssdk: bias must be contiguous, got strides {bias.stride()}")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear``: ``y = x @ weight^T (+ bias)``, optionally into ``out``.

    Parameters
    ----------
    x : [..., K] fp32/fp16/bf16, K >= 1; leading dims collapsible into rows (rows may be strided), last dim
        contiguous.
    weight : [N, K], x's dtype and device, last dim contiguous (rows may be strided).
    bias : optional [N], x's dtype, contiguous.
    out : optional [..., N] output, x's dtype and device, rows may be strided (last dim contiguous);
        allocated when None.

    Returns
    -------
    out : [..., N]. CUDA, fp16/bf16, at most ``SKINNY_MAX_ROWS`` rows: fp32 products and sums rounded once
        (bias added in fp32); otherwise cuBLAS's result (torch's matmul).
    """
    check_linear_args(x, weight, bias, FLOAT_DTYPES)
    out = out_or_new(out, (*x.shape[:-1], weight.shape[0]), x, "x")
    check_rows(out, "out")
    _backend.impl("linear", x.device)(out, x, weight, bias)
    return out


def linear_silu_mul(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None,
                    hf_exact: bool = False) -> torch.Tensor:
    """SwiGLU of a merged gate_up projection: ``silu_and_mul(linear(x, weight), hf_exact)`` in one kernel.

    Output j needs weight rows j (gate) and I + j (up). Gate and up are rounded to x's dtype, as ``linear``
    writes them, before ``silu(gate) * up`` in fp32 exactly as ``silu_and_mul`` computes it, so the result
    is bit for bit the unfused pair's on every backend (with tensor parallelism each rank passes its own
    ``[gate shard | up shard]`` weight).

    Parameters
    ----------
    x : [..., K] fp32/fp16/bf16, K >= 1; leading dims collapsible into rows (rows may be strided), last dim
        contiguous.
    weight : [2I, K] = [gate | up], x's dtype and device, last dim contiguous (rows may be strided).
    out : optional [..., I] output, x's dtype and device, rows may be strided (last dim contiguous);
        allocated when None.
    hf_exact : ``silu_and_mul``'s: round silu(gate) to x's dtype before the multiply (transformers'
        ``act_fn(gate_proj(x)) * up_proj(x)``).

    Returns
    -------
    out : [..., I]. CUDA, fp16/bf16, at most ``SKINNY_MAX_ROWS`` rows: the skinny kernel with the SwiGLU
        epilogue (one launch); otherwise ``linear`` into a [..., 2I] buffer, then ``silu_and_mul``.
    """
    check_linear_args(x, weight, None, FLOAT_DTYPES)
    if weight.shape[0] % 2:
        raise ValueError(f"ssdk: weight must have an even number of rows ([gate | up]), got {tuple(weight.shape)}")
    out = out_or_new(out, (*x.shape[:-1], weight.shape[0] // 2), x, "x")
    check_rows(out, "out")
    _backend.impl("linear_silu_mul", x.device)(out, x, weight, hf_exact)
    return out


def _triton(*args):
    from ..triton_kernels import linear as triton_linear

    return triton_linear.linear(*args)


def _triton_silu_mul(*args):
    from ..triton_kernels import linear as triton_linear

    return triton_linear.linear_silu_mul(*args)


_has_cuda_op = _C is not None and hasattr(torch.ops.ssdk, "linear")
_backend.register("linear", cuda=torch.ops.ssdk.linear if _has_cuda_op else None, triton=_triton,
                  torch=ref.linear_out)
_has_silu_mul_op = _C is not None and hasattr(torch.ops.ssdk, "linear_silu_mul")
_backend.register("linear_silu_mul", cuda=torch.ops.ssdk.linear_silu_mul if _has_silu_mul_op else None,
                  triton=_triton_silu_mul, torch=ref.linear_silu_mul_out)

if _has_cuda_op:
    @torch.library.register_fake("ssdk::linear")
    def _(out, x, weight, bias):
        return None

if _has_silu_mul_op:
    @torch.library.register_fake("ssdk::linear_silu_mul")
    def _(out, x, weight, hf_exact):
        return None
