"""Reference RoPE and fused Qwen-3 q/k-norm + RoPE (fp32 math; see ssdk.ops.rope for semantics).

Rotation of one pair (x1, x2) at angle a (cos c, sin s):
    o1 = x1 * c - x2 * s,   o2 = x2 * c + x1 * s
neox (rotate-half) pairs element i with i + rot/2; GPT-J (is_neox=False) pairs 2i with 2i + 1.
Only the first rot = cos_sin_cache.shape[-1] dims of each head rotate; the rest pass through.
"""

from __future__ import annotations

import torch

from . import kv_cache as ref_kv_cache
from . import norm as ref_norm


def heads_view(x: torch.Tensor, head_size: int) -> torch.Tensor:
    """[T, H * head_size] or [T, H, head_size] -> a [T, H, head_size] view of the same memory."""
    return x.unflatten(-1, (-1, head_size)) if x.dim() == 2 else x


def cos_sin_from_cache(positions: torch.Tensor, cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the [max_position, rot] cache (cos | sin) at ``positions``: two [T, rot/2] fp32 tensors."""
    cs = cos_sin_cache[positions.long()].float()
    return cs.chunk(2, dim=-1)


def cos_sin_from_inv_freq(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of ``float(position) * inv_freq`` (fp32, transformers' order): two [T, rot/2] tensors."""
    freqs = positions.float()[:, None] * inv_freq.float()[None, :]
    return freqs.cos(), freqs.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, is_neox: bool, hf_exact: bool) -> torch.Tensor:
    """Rotate x [T, H, D] by cos/sin [T, rot/2]; returns a new tensor in x.dtype.

    hf_exact follows transformers' apply_rotary_pos_emb in x.dtype: cos/sin cast to the dtype, each
    product rounded, then the sum rounded. Otherwise fp32 math with one rounding at the end.
    """
    dtype, rot = x.dtype, 2 * cos.shape[-1]
    xf = x.float()
    head, tail = xf[..., :rot], xf[..., rot:]
    if is_neox:
        x1, x2 = head[..., : rot // 2], head[..., rot // 2:]
    else:
        x1, x2 = head[..., 0::2], head[..., 1::2]
    cos, sin = cos[:, None, :], sin[:, None, :]
    if hf_exact:
        def r(v: torch.Tensor) -> torch.Tensor:
            return v.to(dtype).float()

        cos, sin = r(cos), r(sin)
        o1 = r(r(x1 * cos) + r(-x2 * sin))
        o2 = r(r(x2 * cos) + r(x1 * sin))
    else:
        o1 = x1 * cos - x2 * sin
        o2 = x2 * cos + x1 * sin
    rotated = torch.cat((o1, o2), -1) if is_neox else torch.stack((o1, o2), -1).flatten(-2)
    return torch.cat((rotated, tail), -1).to(dtype)


def rope(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None, head_size: int,
         cos_sin_cache: torch.Tensor, is_neox: bool = True,
         hf_exact: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return rotated copies of query/key ([T, H, head_size] each, in their dtype)."""
    cos, sin = cos_sin_from_cache(positions, cos_sin_cache)
    q = rotate(heads_view(query, head_size), cos, sin, is_neox, hf_exact)
    k = None if key is None else rotate(heads_view(key, head_size), cos, sin, is_neox, hf_exact)
    return q, k


def qk_norm_rope(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor, q_weight: torch.Tensor,
                 k_weight: torch.Tensor, eps: float, cos_sin_cache: torch.Tensor, is_neox: bool = True,
                 hf_exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The unfused sequence: per-head rmsnorm (rounded to the dtype, as ssdk.ops.rmsnorm stores it),
    then RoPE. Returns new [T, H, D] tensors."""
    head_size = q_weight.shape[0]
    q = ref_norm.rmsnorm(heads_view(query, head_size), q_weight, eps, hf_exact)
    k = ref_norm.rmsnorm(heads_view(key, head_size), k_weight, eps, hf_exact)
    return rope(positions, q, k, head_size, cos_sin_cache, is_neox, hf_exact)


# Out-variant adaptors with the op schemas' signatures (the torch backend).
def rope_inplace(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None, head_size: int,
                 cos_sin_cache: torch.Tensor, is_neox: bool, hf_exact: bool, value: torch.Tensor | None = None,
                 k_cache: torch.Tensor | None = None, v_cache: torch.Tensor | None = None,
                 slot_mapping: torch.Tensor | None = None) -> None:
    q, k = rope(positions, query, key, head_size, cos_sin_cache, is_neox, hf_exact)
    heads_view(query, head_size).copy_(q)
    if key is not None:
        heads_view(key, head_size).copy_(k)
    if k_cache is not None:
        ref_kv_cache.store_kv_cache(k, heads_view(value, head_size), k_cache, v_cache, slot_mapping)


def rope_pos_ids_inplace(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None, head_size: int,
                         inv_freq: torch.Tensor, is_neox: bool, hf_exact: bool) -> None:
    cos, sin = cos_sin_from_inv_freq(positions, inv_freq)
    for x in (query, key):
        if x is not None:
            view = heads_view(x, head_size)
            view.copy_(rotate(view, cos, sin, is_neox, hf_exact))


def qk_norm_rope_inplace(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor, q_weight: torch.Tensor,
                         k_weight: torch.Tensor, eps: float, cos_sin_cache: torch.Tensor, is_neox: bool,
                         hf_exact: bool, value: torch.Tensor | None, k_cache: torch.Tensor | None,
                         v_cache: torch.Tensor | None, slot_mapping: torch.Tensor | None) -> None:
    head_size = q_weight.shape[0]
    q, k = qk_norm_rope(positions, query, key, q_weight, k_weight, eps, cos_sin_cache, is_neox, hf_exact)
    heads_view(query, head_size).copy_(q)
    heads_view(key, head_size).copy_(k)
    if k_cache is not None:
        ref_kv_cache.store_kv_cache(k, heads_view(value, head_size), k_cache, v_cache, slot_mapping)
