"""Paged KV-cache store (vLLM ``reshape_and_cache_flash`` semantics).

Cache layout (what ssdk's tree attention and FlashInfer's NHD paged cache read):
    k_cache, v_cache : [num_pages, page_size, num_kv_heads, head_dim]
    token t goes to slot s = slot_mapping[t] = page * page_size + offset,
    i.e. k_cache[s // page_size, s % page_size] = key[t]; s = -1 skips the token.
The page and offset dims may be strided (e.g. the two halves of a [num_pages, 2, page_size, H, D]
FlashInfer cache); only the last dim (head_dim) must be contiguous.
"""

from __future__ import annotations

import torch

from .. import _C
from ..ref import kv_cache as ref
from . import _backend
from ._checks import FLOAT_DTYPES, INDEX_DTYPES, check_dtype, check_same_device, check_same_dtype, check_shape, \
    check_tensor


def _check_last_dim_contiguous(t: torch.Tensor, name: str) -> None:
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"ssdk: {name} must be contiguous in its last dimension, got strides {t.stride()}")


def check_kv_write(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor) -> None:
    """Validate the arguments of a paged KV write; every error names the argument."""
    for t, name in ((key, "key"), (value, "value"), (k_cache, "k_cache"), (v_cache, "v_cache"),
                    (slot_mapping, "slot_mapping")):
        check_tensor(t, name)
        check_same_device(t, name, key, "key")
    check_dtype(key, "key", FLOAT_DTYPES)
    if key.dim() != 3:
        raise ValueError(f"ssdk: key must have shape [num_tokens, num_kv_heads, head_dim], got {tuple(key.shape)}")
    check_same_dtype(value, "value", key, "key")
    check_shape(value, "value", key.shape)
    if k_cache.dim() != 4:
        raise ValueError("ssdk: k_cache must have shape [num_pages, page_size, num_kv_heads, head_dim], got "
                         f"{tuple(k_cache.shape)}")
    if tuple(k_cache.shape[2:]) != tuple(key.shape[1:]):
        raise ValueError(f"ssdk: k_cache heads/head_dim {tuple(k_cache.shape[2:])} do not match key "
                         f"{tuple(key.shape[1:])}")
    check_same_dtype(k_cache, "k_cache", key, "key")
    check_same_dtype(v_cache, "v_cache", key, "key")
    check_shape(v_cache, "v_cache", k_cache.shape)
    check_dtype(slot_mapping, "slot_mapping", INDEX_DTYPES)
    check_shape(slot_mapping, "slot_mapping", key.shape[:1])
    for t, name in ((key, "key"), (value, "value"), (k_cache, "k_cache"), (v_cache, "v_cache")):
        _check_last_dim_contiguous(t, name)


def store_kv_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor) -> None:
    """Write new tokens' keys and values into a paged cache, in place.

    Parameters
    ----------
    key, value : [T, Hkv, D] fp32/fp16/bf16; any strides with the last dim contiguous (views of a
        fused qkv projection are fine).
    k_cache, v_cache : [num_pages, page_size, Hkv, D], same dtype; last dim contiguous.
    slot_mapping : [T] int32/int64; slot = page * page_size + offset, -1 = skip the token. Slots must be
        unique among the non-negative entries and < num_pages * page_size: the GPU kernels skip larger
        slots without writing (no host sync to report them); the torch reference raises IndexError.
    """
    check_kv_write(key, value, k_cache, v_cache, slot_mapping)
    _backend.impl("store_kv_cache", key.device)(key, value, k_cache, v_cache, slot_mapping)


def _triton(name: str):
    def run(*args):
        from ..triton_kernels import kv_cache as triton_kv_cache

        return getattr(triton_kv_cache, name)(*args)

    return run


_has_cuda_op = _C is not None and hasattr(torch.ops.ssdk, "store_kv_cache")
_backend.register("store_kv_cache", cuda=torch.ops.ssdk.store_kv_cache if _has_cuda_op else None,
                  triton=_triton("store_kv_cache"), torch=ref.store_kv_cache)

if _has_cuda_op:
    @torch.library.register_fake("ssdk::store_kv_cache")
    def _(key, value, k_cache, v_cache, slot_mapping):
        return None
