"""Tree attention: queries of a draft tree, a verify chain, a decode token or a prefill chunk attend to
their request's paged KV prefix (no mask) plus their own new tokens under a compact ancestor mask.

One op serves prefill, decode, verification and the SSD draft tree. It needs no plan step and no host
synchronization: every size the kernels depend on is a host int (``max_q_len``, tensor shapes).
"""

from __future__ import annotations

import math

import torch

from .. import _C
from ..ref import attention as ref
from . import _backend
from ._checks import check_dtype, check_same_device, check_same_dtype, check_shape, check_tensor, out_or_new

HEAD_DIMS = (64, 128)
ATTN_DTYPES = (torch.float16, torch.bfloat16)


def _check_index(t: torch.Tensor, name: str, shape: tuple[int, ...], q: torch.Tensor) -> None:
    check_tensor(t, name)
    check_dtype(t, name, (torch.int32,))
    check_same_device(t, name, q, "q")
    check_shape(t, name, shape)
    if not t.is_contiguous():
        raise ValueError(f"ssdk: {name} must be contiguous, got strides {t.stride()}")


def _check_last_dim_contiguous(t: torch.Tensor, name: str) -> None:
    if t.stride(-1) != 1:
        raise ValueError(f"ssdk: {name} must be contiguous in its last dimension, got strides {t.stride()}")


def _check(q, k_cache, v_cache, block_tables, prefix_lens, qo_indptr, tree_mask, max_q_len) -> None:
    check_tensor(q, "q")
    check_dtype(q, "q", ATTN_DTYPES)
    if q.dim() != 3:
        raise ValueError(f"ssdk: q must have shape [N_total, num_qo_heads, head_dim], got {tuple(q.shape)}")
    n_total, num_qo_heads, head_dim = q.shape
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"ssdk: q head_dim must be one of {HEAD_DIMS}, got {head_dim}")
    _check_last_dim_contiguous(q, "q")
    for name, cache in (("k_cache", k_cache), ("v_cache", v_cache)):
        check_tensor(cache, name)
        check_same_device(cache, name, q, "q")
        check_same_dtype(cache, name, q, "q")
        if cache.dim() != 4 or cache.shape[3] != head_dim:
            raise ValueError(f"ssdk: {name} must have shape [num_pages, page_size, num_kv_heads, {head_dim}], "
                             f"got {tuple(cache.shape)}")
        _check_last_dim_contiguous(cache, name)
    check_shape(v_cache, "v_cache", k_cache.shape)
    num_kv_heads = k_cache.shape[2]
    if num_kv_heads == 0 or num_qo_heads % num_kv_heads != 0:
        raise ValueError(f"ssdk: num_qo_heads ({num_qo_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
    check_tensor(block_tables, "block_tables")
    if block_tables.dim() != 2:
        raise ValueError(f"ssdk: block_tables must have shape [batch, max_pages], got {tuple(block_tables.shape)}")
    batch = block_tables.shape[0]
    _check_index(block_tables, "block_tables", tuple(block_tables.shape), q)
    _check_index(prefix_lens, "prefix_lens", (batch,), q)
    _check_index(qo_indptr, "qo_indptr", (batch + 1,), q)
    if not isinstance(max_q_len, int) or isinstance(max_q_len, bool) or max_q_len < 0:
        raise TypeError(f"ssdk: max_q_len must be a non-negative int, got {max_q_len!r}")
    if max_q_len == 0 and n_total > 0:
        raise ValueError("ssdk: max_q_len must be >= 1 when q has rows")
    if tree_mask is not None:
        check_tensor(tree_mask, "tree_mask")
        check_dtype(tree_mask, "tree_mask", (torch.int32,))
        check_same_device(tree_mask, "tree_mask", q, "q")
        if tree_mask.dim() != 2 or tree_mask.shape[0] != n_total or tree_mask.shape[1] * 32 < max_q_len:
            raise ValueError(f"ssdk: tree_mask must have shape [{n_total}, W] with W >= ceil(max_q_len / 32) = "
                             f"{(max_q_len + 31) // 32}, got {tuple(tree_mask.shape)}")
        _check_last_dim_contiguous(tree_mask, "tree_mask")


def tree_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                   prefix_lens: torch.Tensor, qo_indptr: torch.Tensor, tree_mask: torch.Tensor | None = None, *,
                   max_q_len: int | None = None, sm_scale: float | None = None, out: torch.Tensor | None = None,
                   return_lse: bool = False, num_kv_splits: int = 0
                   ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of new tokens over a paged KV prefix plus an implicitly masked set of new tokens.

    Request ``b`` owns query rows ``qo_indptr[b] .. qo_indptr[b+1] - 1`` (its ``n_b`` new tokens). Their
    K/V are already in the cache at positions ``prefix_lens[b] .. prefix_lens[b] + n_b - 1``. Query ``i``
    of request ``b`` attends to every prefix position ``0 .. prefix_lens[b] - 1`` and to the new tokens
    ``j`` that ``tree_mask`` allows (its ancestors and itself in a draft tree); ``tree_mask=None`` means
    causal among the new tokens (decode, a verify chain, a prefill chunk). Softmax in fp32.

    Parameters
    ----------
    q : [N_total, num_qo_heads, head_dim] fp16/bf16, head_dim in {64, 128}; token and head strides free,
        last dim contiguous.
    k_cache, v_cache : [num_pages, page_size, num_kv_heads, head_dim], q's dtype; the token at position
        ``pos`` of request ``b`` sits at ``[block_tables[b, pos // page_size], pos % page_size]``.
        num_qo_heads must be a multiple of num_kv_heads (GQA, any ratio). Last dim contiguous.
    block_tables : [batch, max_pages] int32, logical page -> physical page.
    prefix_lens : [batch] int32, tokens cached before the new ones.
    qo_indptr : [batch + 1] int32, query row offsets (qo_indptr[0] = 0, non-decreasing).
    tree_mask : optional [N_total, W] int32 ancestor bits over the request's new tokens: bit ``j & 31`` of
        word ``j >> 5`` in row ``qo_indptr[b] + i`` set = query i may attend new token j. W >= ceil(max_q_len/32).
    max_q_len : host int upper bound on every n_b (default N_total); sizes the launch, never synced.
    sm_scale : softmax scale, > 0 (default 1 / sqrt(head_dim)).
    out : optional [N_total, num_qo_heads, head_dim] output in q's dtype (last dim contiguous).
    return_lse : also return the log-sum-exp (natural log) of the scaled scores, for merging states.
    num_kv_splits : CUDA only: split each request's KV into this many chunks (0 = chosen from the launch
        size and the SM count). Decode (max_q_len == 1, GQA group <= 16) runs its own kernel: splits
        capped at 128 and at the 64-token tiles of a block_tables row, merged by a second kernel.
        Otherwise the splits merge inside a thread-block cluster: capped at 16 (8 where the GPU cannot
        hold 16-CTA clusters, 1 before sm_90). A tuning knob; the result does not depend on it beyond
        fp32 rounding.

    Returns
    -------
    out : [N_total, num_qo_heads, head_dim]; rows that see no key (empty mask row with no prefix) are 0.
    lse : [N_total, num_qo_heads] fp32 (only with return_lse); -inf for rows that see no key.
    """
    max_q_len = q.shape[0] if max_q_len is None and isinstance(q, torch.Tensor) else max_q_len
    _check(q, k_cache, v_cache, block_tables, prefix_lens, qo_indptr, tree_mask, max_q_len)
    if not isinstance(num_kv_splits, int) or num_kv_splits < 0:
        raise ValueError(f"ssdk: num_kv_splits must be a non-negative int, got {num_kv_splits!r}")
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    if not (math.isfinite(sm_scale) and sm_scale > 0):
        raise ValueError(f"ssdk: sm_scale must be positive and finite, got {sm_scale}")
    out = out_or_new(out, q.shape, q, "q")
    _check_last_dim_contiguous(out, "out")
    lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device) if return_lse else None
    _backend.impl("tree_attention", q.device)(out, lse, q, k_cache, v_cache, block_tables, prefix_lens, qo_indptr,
                                              tree_mask, max_q_len, sm_scale, num_kv_splits)
    return (out, lse) if return_lse else out


def _cuda_kernel():
    """torch.ops.ssdk.tree_attention when _C was built with it (it needs the CUTLASS/CuTe headers)."""
    if _C is None or not hasattr(torch.ops.ssdk, "tree_attention"):
        return None
    try:
        from .. import _build_config
    except ImportError:
        return None
    return torch.ops.ssdk.tree_attention if getattr(_build_config, "cutlass_dir", None) else None


def _triton(*args) -> None:
    from ..triton_kernels import attention as triton_attention

    triton_attention.tree_attention(*args)


_backend.register("tree_attention", cuda=_cuda_kernel(), triton=_triton, torch=ref.tree_attention_out)

if _C is not None and hasattr(torch.ops.ssdk, "tree_attention"):
    # Out-variant schema (mutates out and lse, returns nothing): nothing to propagate.
    @torch.library.register_fake("ssdk::tree_attention")
    def _(out, lse, q, k_cache, v_cache, block_tables, prefix_lens, qo_indptr, tree_mask, max_q_len, sm_scale,
          num_kv_splits):
        return None
