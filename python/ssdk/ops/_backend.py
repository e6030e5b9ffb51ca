"""Backend table: each op resolves to cuda -> triton -> torch, once per (op, device type).

CPU tensors use torch unless Triton's interpreter is asked for explicitly (TRITON_INTERPRET=1 plus an
override below).

Overrides (environment, read at first use):
  SSDK_BACKEND=cuda|triton|torch        every op
  SSDK_BACKEND_<OP>=cuda|triton|torch   one op, e.g. SSDK_BACKEND_RMSNORM=triton
An explicit request that cannot be met raises instead of silently falling back.
Tests and benchmarks pin a backend with ``with ssdk.ops.use_backend("triton"): ...``.

Every backend implements the same out-variant signature as the op's schema.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator

import torch

BACKENDS = ("cuda", "triton", "torch")

_IMPLS: dict[str, dict[str, Callable]] = {}
_RESOLVED: dict[tuple[str, str, str | None], Callable] = {}
_forced: str | None = None


def register(op: str, *, cuda: Callable | None = None, triton: Callable | None = None,
             torch: Callable) -> None:
    """Register the implementations of ``op``; the torch reference is mandatory."""
    _IMPLS[op] = {name: fn for name, fn in (("cuda", cuda), ("triton", triton), ("torch", torch)) if fn}
    _RESOLVED.clear()


def registered_ops() -> list[str]:
    return sorted(_IMPLS)


def _triton_usable(device_type: str) -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if device_type == "cuda":
        return True, ""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, ""
    return False, f"triton needs a CUDA device (or TRITON_INTERPRET=1), got {device_type} tensors"


def unavailable_reason(op: str, backend: str, device_type: str) -> str | None:
    """Why ``backend`` cannot run ``op`` on ``device_type`` tensors, or None if it can."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}; expected one of {BACKENDS}"
    if backend not in _IMPLS[op]:
        return f"op {op} has no {backend} implementation"
    if backend == "cuda":
        from .. import _C, EXTENSION_STATUS

        if _C is None:
            return f"the CUDA extension is not available ({EXTENSION_STATUS})"
        if device_type != "cuda":
            return f"the CUDA backend needs CUDA tensors, got {device_type} tensors"
    if backend == "triton":
        ok, why = _triton_usable(device_type)
        return None if ok else why
    return None


def _requested(op: str) -> tuple[str | None, str]:
    if _forced is not None:
        return _forced, "use_backend()"
    var = f"SSDK_BACKEND_{op.upper()}"
    if os.environ.get(var):
        return os.environ[var].lower(), var
    if os.environ.get("SSDK_BACKEND"):
        return os.environ["SSDK_BACKEND"].lower(), "SSDK_BACKEND"
    return None, ""


def resolve(op: str, device_type: str) -> str:
    """Name of the backend ``op`` uses for tensors on ``device_type``."""
    if op not in _IMPLS:
        raise KeyError(f"ssdk: unknown op {op!r}")
    wanted, source = _requested(op)
    if wanted is not None:
        reason = unavailable_reason(op, wanted, device_type)
        if reason:
            raise RuntimeError(f"ssdk: {source} asks for backend {wanted!r} for {op}, but {reason}")
        return wanted
    for backend in BACKENDS:
        if backend == "triton" and device_type != "cuda":
            continue  # the interpreter is for tests: only by explicit request
        if unavailable_reason(op, backend, device_type) is None:
            return backend
    raise AssertionError("unreachable: the torch backend is always available")


def impl(op: str, device: torch.device) -> Callable:
    """The implementation of ``op`` for tensors on ``device`` (cached)."""
    key = (op, device.type, _forced)
    fn = _RESOLVED.get(key)
    if fn is None:
        fn = _IMPLS[op][resolve(op, device.type)]
        _RESOLVED[key] = fn
    return fn


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[None]:
    """Pin every op to ``backend`` inside the block (raises at call time if it cannot run)."""
    global _forced
    if backend not in BACKENDS:
        raise ValueError(f"ssdk: backend must be one of {BACKENDS}, got {backend!r}")
    previous, _forced = _forced, backend
    try:
        yield
    finally:
        _forced = previous


def get_impl(op: str, backend: str, device_type: str = "cuda") -> Callable:
    """The ``backend`` implementation of ``op`` (out-variant signature); raises if it cannot run."""
    reason = unavailable_reason(op, backend, device_type)
    if reason:
        raise RuntimeError(f"ssdk: backend {backend!r} cannot run {op}: {reason}")
    return _IMPLS[op][backend]
