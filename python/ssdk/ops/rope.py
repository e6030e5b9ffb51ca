"""Rotary position embedding (RoPE) and the fused Qwen-3 attention prologue.

- ``rope_cos_sin_cache``: the [max_position, rot] fp32 table (cos | sin), Llama-3.1 ``rope_scaling``
  ("llama3") or plain theta (Qwen-3), computed exactly as transformers computes its inv_freq/cos/sin.
- ``apply_rope``: vLLM ``rotary_embedding`` call shape, in place on q and k; positions are arbitrary
  per token (speculative trees repeat and reorder them). FlashInfer drop-ins:
  ``apply_rope_with_cos_sin_cache_inplace``, ``apply_rope_pos_ids_inplace``,
  ``apply_llama31_rope_pos_ids_inplace`` (the last two compute cos/sin on the fly from inv_freq).
- ``apply_rope(..., value=, k_cache=, v_cache=, slot_mapping=)``: the same with the paged KV write of
  the rotated k and v in one kernel (Llama's attention prologue); equal to apply_rope -> store_kv_cache.
- ``qk_norm_rope``: Qwen-3 per-head RMSNorm of q and k, then RoPE, optionally writing k/v into the
  paged cache, in one kernel; equal to rmsnorm -> apply_rope -> store_kv_cache.

hf_exact=True reproduces transformers' ``apply_rotary_pos_emb`` rounding in the model dtype bit for bit
(cos/sin cast to the dtype, each product rounded, then the sum); otherwise fp32 math, one rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .. import _C
from ..ref import rope as ref
from . import _backend
from ._checks import FLOAT_DTYPES, INDEX_DTYPES, check_dtype, check_same_device, check_same_dtype, check_shape, \
    check_tensor
from .kv_cache import check_kv_write

MAX_HEAD_SIZE = 256
_ROPE_TYPES = ("default", "llama3")


def rope_inv_freq(rotary_dim: int, theta: float, rope_scaling: Mapping | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Inverse frequencies [rotary_dim // 2] fp32, computed as transformers does.

    transformers builds inv_freq on the CPU at model init (then moves the buffer), so this does too:
    the GPU's pow may differ by an ulp. rope_scaling: None / {"rope_type": "default"} (Qwen-3), or
    {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings"} (Llama-3.1); the legacy "type" key is accepted too.
    """
    if rotary_dim <= 0 or rotary_dim % 2:
        raise ValueError(f"ssdk: rotary_dim must be a positive even number, got {rotary_dim}")
    rope_type = "default"
    if rope_scaling is not None:
        rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if rope_type not in _ROPE_TYPES:
        raise ValueError(f"ssdk: rope_scaling type {rope_type!r} is not supported; expected one of {_ROPE_TYPES}")
    # transformers' _compute_llama3_parameters / compute_default_rope_parameters, same op order.
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).to(dtype=torch.float)
                                / rotary_dim))
    if rope_type == "llama3":
        missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
                   if k not in rope_scaling]
        if missing:
            raise ValueError(f"ssdk: rope_scaling of type 'llama3' lacks {missing}")
        factor = rope_scaling["factor"]
        low_freq_factor = rope_scaling["low_freq_factor"]
        high_freq_factor = rope_scaling["high_freq_factor"]
        old_context_len = rope_scaling["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)
    return inv_freq.to(device)


def rope_cos_sin_cache(head_dim: int, max_position: int, theta: float, rope_scaling: Mapping | None = None,
                       dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                       rotary_dim: int | None = None) -> torch.Tensor:
    """The RoPE table in vLLM's layout.

    Parameters
    ----------
    head_dim : head size (the rotated width unless rotary_dim is given).
    max_position : number of positions (rows).
    theta : rope_theta (500000 for Llama-3.1, 1000000 for Qwen-3).
    rope_scaling : see :func:`rope_inv_freq`.
    dtype : table dtype (fp32 keeps transformers' values exactly; the kernels also take q's dtype).
    device : where the angles and cos/sin are computed (HF computes them on the model's device).
    rotary_dim : rotated width (partial rotary), default head_dim.

    Returns
    -------
    cos_sin_cache : [max_position, rot]; row p = cos(p * inv_freq) | sin(p * inv_freq), each [rot/2],
        with p * inv_freq rounded in fp32 as transformers' LlamaRotaryEmbedding does.
    """
    rot = head_dim if rotary_dim is None else rotary_dim
    if not 0 < rot <= head_dim:
        raise ValueError(f"ssdk: rotary_dim must be in [1, head_dim={head_dim}], got {rot}")
    if max_position <= 0:
        raise ValueError(f"ssdk: max_position must be positive, got {max_position}")
    inv_freq = rope_inv_freq(rot, theta, rope_scaling, device)
    positions = torch.arange(max_position, device=inv_freq.device, dtype=torch.int64)
    freqs = positions[:, None].float() * inv_freq[None, :]
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(dtype)


def _check_heads(x: torch.Tensor, name: str, num_tokens: int, head_size: int) -> None:
    check_tensor(x, name)
    check_dtype(x, name, FLOAT_DTYPES)
    if x.dim() not in (2, 3) or x.shape[0] != num_tokens:
        raise ValueError(f"ssdk: {name} must have shape [{num_tokens}, num_heads * head_size] or "
                         f"[{num_tokens}, num_heads, head_size], got {tuple(x.shape)}")
    if x.dim() == 3 and x.shape[2] != head_size:
        raise ValueError(f"ssdk: {name} last dim must equal head_size={head_size}, got {x.shape[2]}")
    if x.dim() == 2 and x.shape[1] % head_size:
        raise ValueError(f"ssdk: {name} last dim {x.shape[1]} is not a multiple of head_size={head_size}")
    if x.shape[-1] > 1 and x.stride(-1) != 1:
        raise ValueError(f"ssdk: {name} must be contiguous in its last dimension, got strides {x.stride()}")


def _check_rope_args(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None, head_size: int,
                     table: torch.Tensor, table_name: str) -> None:
    check_tensor(positions, "positions")
    check_dtype(positions, "positions", INDEX_DTYPES)
    if positions.dim() != 1:
        raise ValueError(f"ssdk: positions must have shape [num_tokens], got {tuple(positions.shape)}")
    if not isinstance(head_size, int) or not 2 <= head_size <= MAX_HEAD_SIZE:
        raise ValueError(f"ssdk: head_size must be an int in [2, {MAX_HEAD_SIZE}], got {head_size!r}")
    num_tokens = positions.shape[0]
    _check_heads(query, "query", num_tokens, head_size)
    check_same_device(positions, "positions", query, "query")
    if key is not None:
        _check_heads(key, "key", num_tokens, head_size)
        check_same_device(key, "key", query, "query")
        check_same_dtype(key, "key", query, "query")
    check_tensor(table, table_name)
    check_same_device(table, table_name, query, "query")
    if not table.is_contiguous():
        raise ValueError(f"ssdk: {table_name} must be contiguous, got strides {table.stride()}")


def _check_cache(cos_sin_cache: torch.Tensor, query: torch.Tensor, head_size: int) -> None:
    if cos_sin_cache.dtype not in (torch.float32, query.dtype):
        raise TypeError(f"ssdk: cos_sin_cache has dtype {cos_sin_cache.dtype}; expected torch.float32 or the "
                        f"dtype of query ({query.dtype})")
    if cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] % 2 or not 2 <= cos_sin_cache.shape[1] <= head_size:
        raise ValueError("ssdk: cos_sin_cache must have shape [max_position, rot] with rot even and <= "
                         f"head_size={head_size}, got {tuple(cos_sin_cache.shape)}")


def apply_rope(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None, head_size: int,
               cos_sin_cache: torch.Tensor, is_neox: bool = True, hf_exact: bool = False,
               value: torch.Tensor | None = None, k_cache: torch.Tensor | None = None,
               v_cache: torch.Tensor | None = None, slot_mapping: torch.Tensor | None = None) -> None:
    """Rotate q and k in place (vLLM ``rotary_embedding``), optionally writing k and v into the paged
    KV cache in the same kernel (Llama's attention prologue).

    Parameters
    ----------
    positions : [T] int32/int64, any values in [0, max_position) (repeats and any order allowed).
    query : [T, Hq * head_size] or [T, Hq, head_size] fp32/fp16/bf16; last dim contiguous, other
        strides free (views of a fused qkv projection).
    key : like query with Hkv heads, same dtype; or None.
    head_size : head dim (<= 256).
    cos_sin_cache : [max_position, rot] (see :func:`rope_cos_sin_cache`), fp32 or query's dtype,
        contiguous; the first rot dims of each head rotate, the rest pass through.
    is_neox : rotate-half pairs (i, i + rot/2) (Llama/Qwen); False: GPT-J pairs (2i, 2i + 1).
    hf_exact : transformers' rounding in the model dtype (see module doc).
    value, k_cache, v_cache, slot_mapping : all or none. value [T, Hkv * D] or [T, Hkv, D];
        caches/slots as in :func:`ssdk.ops.store_kv_cache`; the rotated k and v are written there.
        Needs key and a table that rotates the whole head (rot == head_size). Equal to apply_rope ->
        store_kv_cache.

    A position outside the table is not checked on the GPU (no host sync): the kernels write NaN into
    that token's rotated dims; the torch reference raises IndexError.
    """
    _check_rope_args(positions, query, key, head_size, cos_sin_cache, "cos_sin_cache")
    _check_cache(cos_sin_cache, query, head_size)
    if _check_kv_write(positions, key, value, k_cache, v_cache, slot_mapping, head_size) and \
            cos_sin_cache.shape[1] != head_size:
        raise ValueError(f"ssdk: the KV write needs a cos_sin_cache that rotates the whole head "
                         f"(rot == head_size={head_size}), got rot={cos_sin_cache.shape[1]}")
    _backend.impl("rope", query.device)(positions, query, key, head_size, cos_sin_cache, bool(is_neox),
                                        bool(hf_exact), value, k_cache, v_cache, slot_mapping)


def _check_kv_write(positions: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None,
                    k_cache: torch.Tensor | None, v_cache: torch.Tensor | None, slot_mapping: torch.Tensor | None,
                    head_size: int) -> bool:
    """True when the fused KV write is requested (value, k_cache, v_cache, slot_mapping: all or none)."""
    kv = (value, k_cache, v_cache, slot_mapping)
    if all(t is None for t in kv):
        return False
    if any(t is None for t in kv):
        raise ValueError("ssdk: value, k_cache, v_cache and slot_mapping must be given together")
    if key is None:
        raise ValueError("ssdk: the KV write needs key")
    _check_heads(value, "value", positions.shape[0], head_size)
    check_kv_write(ref.heads_view(key, head_size), ref.heads_view(value, head_size), k_cache, v_cache, slot_mapping)
    return True


def apply_rope_with_cos_sin_cache_inplace(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor,
                                          head_size: int, cos_sin_cache: torch.Tensor, is_neox: bool = True) -> None:
    """FlashInfer's ``flashinfer.rope.apply_rope_with_cos_sin_cache_inplace`` (same arguments)."""
    apply_rope(positions, query, key, head_size, cos_sin_cache, is_neox)


_INV_FREQ: dict[tuple, torch.Tensor] = {}


def _cached_inv_freq(rotary_dim: int, theta: float, scaling: tuple | None, rope_scale: float,
                     device: torch.device) -> torch.Tensor:
    """inv_freq / rope_scale, built once per configuration and device (later calls are graph-safe)."""
    key = (rotary_dim, float(theta), scaling, float(rope_scale), device)
    if key not in _INV_FREQ:
        inv_freq = rope_inv_freq(rotary_dim, theta, None if scaling is None else dict(scaling))
        _INV_FREQ[key] = (inv_freq / rope_scale if rope_scale != 1 else inv_freq).to(device)
    return _INV_FREQ[key]


def _rope_pos_ids(q: torch.Tensor, k: torch.Tensor, pos_ids: torch.Tensor, rotary_dim: int | None,
                  interleave: bool, inv_freq_key: tuple, hf_exact: bool) -> None:
    check_tensor(q, "q")
    if q.dim() != 3:
        raise ValueError(f"ssdk: q must have shape [nnz, num_q_heads, head_dim], got {tuple(q.shape)}")
    head_size = q.shape[-1]
    rot = head_size if rotary_dim is None else rotary_dim
    if rot % 2 or not 2 <= rot <= head_size:
        raise ValueError(f"ssdk: rotary_dim must be even and in [2, head_dim={head_size}], got {rot}")
    inv_freq = _cached_inv_freq(rot, *inv_freq_key, q.device)
    _check_rope_args(pos_ids, q, k, head_size, inv_freq, "inv_freq")
    _backend.impl("rope_pos_ids", q.device)(pos_ids, q, k, head_size, inv_freq, not interleave, hf_exact)


def apply_rope_pos_ids_inplace(q: torch.Tensor, k: torch.Tensor, pos_ids: torch.Tensor, rotary_dim: int | None = None,
                               interleave: bool = False, rope_scale: float = 1.0, rope_theta: float = 1e4,
                               hf_exact: bool = False) -> None:
    """FlashInfer's ``flashinfer.rope.apply_rope_pos_ids_inplace``: cos/sin computed in the kernel.

    q : [nnz, Hq, D], k : [nnz, Hkv, D], pos_ids : [nnz] int32/int64. Angles are
    ``float(pos) * (inv_freq / rope_scale)`` in fp32, so rope_scale=1 gives exactly the values of
    :func:`rope_cos_sin_cache` (to the sincos ulp). interleave=True is the GPT-J layout.
    """
    _rope_pos_ids(q, k, pos_ids, rotary_dim, interleave, (rope_theta, None, rope_scale), hf_exact)


def apply_llama31_rope_pos_ids_inplace(q: torch.Tensor, k: torch.Tensor, pos_ids: torch.Tensor,
                                       rotary_dim: int | None = None, interleave: bool = False,
                                       rope_scale: float = 8.0, rope_theta: float = 5e5,
                                       low_freq_factor: float = 1.0, high_freq_factor: float = 4.0,
                                       old_context_len: int = 8192, hf_exact: bool = False) -> None:
    """FlashInfer's ``flashinfer.rope.apply_llama31_rope_pos_ids_inplace`` (rope_scale is llama3's factor)."""
    scaling = (("rope_type", "llama3"), ("factor", rope_scale), ("low_freq_factor", low_freq_factor),
               ("high_freq_factor", high_freq_factor), ("original_max_position_embeddings", old_context_len))
    _rope_pos_ids(q, k, pos_ids, rotary_dim, interleave, (rope_theta, scaling, 1.0), hf_exact)


def qk_norm_rope(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor, q_weight: torch.Tensor,
                 k_weight: torch.Tensor, eps: float, cos_sin_cache: torch.Tensor, is_neox: bool = True,
                 hf_exact: bool = False, value: torch.Tensor | None = None, k_cache: torch.Tensor | None = None,
                 v_cache: torch.Tensor | None = None, slot_mapping: torch.Tensor | None = None) -> None:
    """Qwen-3 attention prologue in one kernel: per-head RMSNorm of q and k, RoPE, optional KV write.

    Parameters
    ----------
    positions, query, key, cos_sin_cache, is_neox : as in :func:`apply_rope`; key is required and the
        table must rotate the whole head (rot == head_size).
    q_weight, k_weight : [head_size], query's dtype, contiguous (q_norm / k_norm weights).
    eps : RMSNorm epsilon.
    hf_exact : the rounding of ``rmsnorm(hf_exact=True)`` then ``apply_rope(hf_exact=True)``; otherwise
        the normalized head is rounded to the dtype once (as the unfused rmsnorm stores it) and RoPE
        runs in fp32.
    value, k_cache, v_cache, slot_mapping : all or none. value [T, Hkv * D] or [T, Hkv, D];
        caches/slots as in :func:`ssdk.ops.store_kv_cache`; the rotated k and v are written there.

    The result equals rmsnorm (per head) -> apply_rope -> store_kv_cache with the same flags.
    """
    check_tensor(q_weight, "q_weight")
    if q_weight.dim() != 1:
        raise ValueError(f"ssdk: q_weight must have shape [head_size], got {tuple(q_weight.shape)}")
    head_size = q_weight.shape[0]
    _check_rope_args(positions, query, key, head_size, cos_sin_cache, "cos_sin_cache")
    check_tensor(key, "key")
    _check_cache(cos_sin_cache, query, head_size)
    if cos_sin_cache.shape[1] != head_size:
        raise ValueError(f"ssdk: qk_norm_rope needs a cos_sin_cache that rotates the whole head "
                         f"(rot == head_size={head_size}), got rot={cos_sin_cache.shape[1]}")
    for w, name in ((q_weight, "q_weight"), (k_weight, "k_weight")):
        check_tensor(w, name)
        check_same_device(w, name, query, "query")
        check_same_dtype(w, name, query, "query")
        check_shape(w, name, (head_size,))
        if not w.is_contiguous():
            raise ValueError(f"ssdk: {name} must be contiguous, got strides {w.stride()}")
    _check_kv_write(positions, key, value, k_cache, v_cache, slot_mapping, head_size)
    _backend.impl("qk_norm_rope", query.device)(positions, query, key, q_weight, k_weight, float(eps),
                                                cos_sin_cache, bool(is_neox), bool(hf_exact), value, k_cache,
                                                v_cache, slot_mapping)


def _triton(name: str):
    def run(*args):
        from ..triton_kernels import rope as triton_rope

        return getattr(triton_rope, name)(*args)

    return run


def _cuda_op(name: str):
    """torch.ops.ssdk.<name> when the loaded extension defines it (a _C built before the op lacks it)."""
    return getattr(torch.ops.ssdk, name) if _C is not None and hasattr(torch.ops.ssdk, name) else None


_backend.register("rope", cuda=_cuda_op("rope"), triton=_triton("rope"), torch=ref.rope_inplace)
_backend.register("rope_pos_ids", cuda=_cuda_op("rope_pos_ids"), triton=_triton("rope_pos_ids"),
                  torch=ref.rope_pos_ids_inplace)
_backend.register("qk_norm_rope", cuda=_cuda_op("qk_norm_rope"), triton=_triton("qk_norm_rope"),
                  torch=ref.qk_norm_rope_inplace)

if _cuda_op("rope") is not None:
    # The schemas mutate their arguments and return nothing: shape propagation has nothing to do.
    @torch.library.register_fake("ssdk::rope")
    def _(positions, query, key, head_size, cos_sin_cache, is_neox, hf_exact, value=None, k_cache=None, v_cache=None,
          slot_mapping=None):
        return None

    @torch.library.register_fake("ssdk::rope_pos_ids")
    def _(positions, query, key, head_size, inv_freq, is_neox, hf_exact):
        return None

    @torch.library.register_fake("ssdk::qk_norm_rope")
    def _(positions, query, key, q_weight, k_weight, eps, cos_sin_cache, is_neox, hf_exact, value, k_cache,
          v_cache, slot_mapping):
        return None
