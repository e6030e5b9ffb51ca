"""RMSNorm and fused residual-add RMSNorm.

Semantics match flashinfer.norm.rmsnorm / fused_add_rmsnorm and vLLM's rms_norm /
fused_add_rms_norm; ``hf_exact=True`` reproduces transformers' LlamaRMSNorm / Qwen3RMSNorm rounding
bit for bit (the engine uses it so greedy speculative output equals greedy AR output).
"""

from __future__ import annotations

import torch

from .. import _C
from ..ref import norm as ref
from . import _backend
from ._checks import FLOAT_DTYPES, check_dtype, check_rows, check_same_device, check_same_dtype, check_shape, \
    check_tensor, out_or_new

MAX_HIDDEN = 16384


def _check(x: torch.Tensor, weight: torch.Tensor, x_name: str) -> None:
    check_tensor(x, x_name)
    check_tensor(weight, "weight")
    check_dtype(x, x_name, FLOAT_DTYPES)
    check_rows(x, x_name)
    hidden = x.shape[-1]
    if not 1 <= hidden <= MAX_HIDDEN:
        raise ValueError(f"ssdk: {x_name} last dim (hidden size) must be in [1, {MAX_HIDDEN}], got {hidden}")
    check_same_device(weight, "weight", x, x_name)
    check_same_dtype(weight, "weight", x, x_name)
    check_shape(weight, "weight", (hidden,))
    if not weight.is_contiguous():
        raise ValueError(f"ssdk: weight must be contiguous, got strides {weight.stride()}")


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, out: torch.Tensor | None = None,
            hf_exact: bool = False) -> torch.Tensor:
    """Root-mean-square norm over the last dimension.

    Parameters
    ----------
    x : [..., hidden] fp32/fp16/bf16; rows may be strided (last dim contiguous).
    weight : [hidden], same dtype as x, contiguous.
    eps : added to the mean square.
    out : optional [..., hidden] output (same dtype/device); allocated when None.
    hf_exact : round x * rsqrt(...) to x.dtype before multiplying by weight (transformers' order).

    Returns
    -------
    out : [..., hidden], ``x * rsqrt(mean(x**2) + eps) * weight`` computed in fp32.
    """
    _check(x, weight, "x")
    out = out_or_new(out, x.shape, x, "x")
    check_rows(out, "out")
    _backend.impl("rmsnorm", x.device)(out, x, weight, float(eps), hf_exact)
    return out


def fused_add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                      hf_exact: bool = False) -> None:
    """In place: ``residual += x; x = rmsnorm(residual) * weight``.

    Parameters
    ----------
    x : [..., hidden] fp32/fp16/bf16; overwritten with the normalized output.
    residual : same shape and dtype as x; overwritten with x + residual (rounded to the dtype).
    weight : [hidden], same dtype, contiguous.
    eps : added to the mean square.
    hf_exact : normalize the rounded sum and round before the weight multiply (transformers' order:
        the residual add happens in the model dtype); otherwise FlashInfer's fp32 order.
    """
    _check(x, weight, "x")
    check_tensor(residual, "residual")
    check_same_device(residual, "residual", x, "x")
    check_same_dtype(residual, "residual", x, "x")
    check_shape(residual, "residual", x.shape)
    check_rows(residual, "residual")
    _backend.impl("fused_add_rmsnorm", x.device)(x, residual, weight, float(eps), hf_exact)


def _triton(name: str):
    def run(*args):
        from ..triton_kernels import norm as triton_norm

        return getattr(triton_norm, name)(*args)

    return run


_backend.register("rmsnorm", cuda=torch.ops.ssdk.rmsnorm if _C is not None else None, triton=_triton("rmsnorm"),
                  torch=ref.rmsnorm_out)
_backend.register("fused_add_rmsnorm", cuda=torch.ops.ssdk.fused_add_rmsnorm if _C is not None else None,
                  triton=_triton("fused_add_rmsnorm"), torch=ref.fused_add_rmsnorm_inplace)

if _C is not None:
    # The schemas mutate their arguments and return nothing: shape propagation has nothing to do.
    @torch.library.register_fake("ssdk::rmsnorm")
    def _(out, x, weight, eps, hf_exact):
        return None

    @torch.library.register_fake("ssdk::fused_add_rmsnorm")
    def _(x, residual, weight, eps, hf_exact):
        return None
