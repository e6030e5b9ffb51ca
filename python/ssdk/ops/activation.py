"""Gated SiLU activation (SwiGLU): ``silu_and_mul`` (vLLM / FlashInfer, gate first)."""

from __future__ import annotations

import torch

from .. import _C
from ..ref import activation as ref
from . import _backend
from ._checks import FLOAT_DTYPES, check_dtype, check_rows, check_tensor, out_or_new


def silu_and_mul(x: torch.Tensor, out: torch.Tensor | None = None, hf_exact: bool = False) -> torch.Tensor:
    """``silu(gate) * up`` for x = [gate | up] along the last dimension.

    Parameters
    ----------
    x : [..., 2 * d] fp32/fp16/bf16; rows may be strided (last dim contiguous).
    out : optional [..., d] output, same dtype/device; rows may be strided. Allocated when None.
    hf_exact : round silu(gate) to x.dtype before the multiply (transformers' ``act_fn(gate_proj(x)) *
        up_proj(x)``); otherwise fp32 math with one rounding (vLLM / FlashInfer).

    Returns
    -------
    out : [..., d]; silu(g) = g / (1 + exp(-g)) in fp32.
    """
    check_tensor(x, "x")
    check_dtype(x, "x", FLOAT_DTYPES)
    check_rows(x, "x")
    if x.shape[-1] % 2:
        raise ValueError(f"ssdk: x last dim must be even ([gate | up]), got {x.shape[-1]}")
    out_shape = (*x.shape[:-1], x.shape[-1] // 2)
    out = out_or_new(out, out_shape, x, "x")
    check_rows(out, "out")
    _backend.impl("silu_and_mul", x.device)(out, x, hf_exact)
    return out


def _triton(*args):
    from ..triton_kernels import activation as triton_activation

    return triton_activation.silu_and_mul(*args)


_has_cuda_op = _C is not None and hasattr(torch.ops.ssdk, "silu_and_mul")
_backend.register("silu_and_mul", cuda=torch.ops.ssdk.silu_and_mul if _has_cuda_op else None, triton=_triton,
                  torch=ref.silu_and_mul_out)

if _has_cuda_op:
    @torch.library.register_fake("ssdk::silu_and_mul")
    def _(out, x, hf_exact):
        return None
