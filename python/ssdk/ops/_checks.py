"""Argument checks shared by the op wrappers: every error names the argument and what was expected."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


def check_tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"ssdk: {name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_dtype(t: torch.Tensor, name: str, allowed: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in allowed:
        raise TypeError(f"ssdk: {name} has dtype {t.dtype}; expected one of {[str(d) for d in allowed]}")


def check_same_dtype(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"ssdk: {name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}")


def check_same_device(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"ssdk: {name} is on {t.device} but {ref_name} is on {ref.device}")


def check_shape(t: torch.Tensor, name: str, shape: tuple[int, ...] | torch.Size) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"ssdk: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def check_contiguous(t: torch.Tensor, name: str) -> None:
    if not t.is_contiguous():
        raise ValueError(f"ssdk: {name} must be contiguous, got strides {t.stride()}")


def check_rows(t: torch.Tensor, name: str) -> None:
    """``t`` must be viewable as [rows, t.shape[-1]] with a row stride: last dim contiguous,
    leading dims collapsible."""
    if t.dim() < 1:
        raise ValueError(f"ssdk: {name} must have at least one dimension")
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"ssdk: {name} must be contiguous in its last dimension, got strides {t.stride()}")
    inner = None  # leading dims of size > 1 must nest: stride[outer] == stride[inner] * size[inner]
    for d in range(t.dim() - 2, -1, -1):
        if t.shape[d] <= 1:
            continue
        if inner is not None and t.stride(d) != t.stride(inner) * t.shape[inner]:
            raise ValueError(f"ssdk: {name} leading dimensions must collapse into rows, got shape "
                             f"{tuple(t.shape)} strides {t.stride()}")
        inner = d

def row_stride(t: torch.Tensor) -> int:
    """Stride between rows of ``t`` viewed as [rows, t.shape[-1]] (see check_rows)."""
    for d in range(t.dim() - 2, -1, -1):
        if t.shape[d] > 1:
            return t.stride(d)
    return t.shape[-1]


def out_or_new(out: torch.Tensor | None, shape: tuple[int, ...] | torch.Size, ref: torch.Tensor,
               ref_name: str) -> torch.Tensor:
    """``out`` checked to be a tensor of ``shape`` with ``ref``'s dtype and device, or a new one.

    Layout requirements (rows, last-dim contiguity) stay with the caller.
    """
    if out is None:
        return torch.empty(shape, dtype=ref.dtype, device=ref.device)
    check_tensor(out, "out")
    check_same_device(out, "out", ref, ref_name)
    check_same_dtype(out, "out", ref, ref_name)
    check_shape(out, "out", shape)
    return out
