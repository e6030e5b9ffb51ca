"""Triton tree attention over a paged KV cache (semantics: ssdk.ops.tree_attention).

One program per (block of packed rows, request, kv head). A row is a (query, head-in-group) pair, so
the GQA heads sharing a kv head and the request's queries fill the M dimension of one tile. The KV loop
runs in two phases: the prefix (no mask) and the request's new tokens (compact ancestor bits, or causal).
Online softmax in fp32 with exp2.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _attend(acc, m_i, l_i, q, k, v, visible, scale_log2, UPCAST: tl.constexpr):
    if UPCAST:  # the CPU interpreter's bf16 dot is not trustworthy: do the interpreter's math in fp32
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale_log2
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
    return acc, m_new, l_i


@triton.jit
def load_kv_tile(k_head, v_head, bt_row, pos, ok, dims, page_size, stride_kp, stride_kt, stride_vp, stride_vt):
    """K and V rows [len(pos), HEAD_DIM] at absolute positions ``pos`` of one request and kv head, through its
    page table row ``bt_row``; rows where ``ok`` is false read as 0."""
    page = tl.load(bt_row + pos // page_size, mask=ok, other=0).to(tl.int64)
    slot = pos % page_size
    k = tl.load(k_head + (page * stride_kp + slot * stride_kt)[:, None] + dims[None, :], mask=ok[:, None], other=0.0)
    v = tl.load(v_head + (page * stride_vp + slot * stride_vt)[:, None] + dims[None, :], mask=ok[:, None], other=0.0)
    return k, v


@triton.jit
def _tree_attention_kernel(out_ptr, lse_ptr, q_ptr, k_ptr, v_ptr, bt_ptr, prefix_ptr, indptr_ptr, mask_ptr,
                           scale_log2, stride_qn, stride_qh, stride_kp, stride_kt, stride_kh,
                           stride_vp, stride_vt, stride_vh, stride_on, stride_oh, stride_ln, stride_bt,
                           stride_mask, page_size,
                           GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_MASK: tl.constexpr,
                           HAS_LSE: tl.constexpr, UPCAST: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr):
    pid_m, b, kv_head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(indptr_ptr + b)
    n = tl.load(indptr_ptr + b + 1) - start
    if pid_m * BLOCK_M >= n * GROUP:
        return
    prefix = tl.load(prefix_ptr + b)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n * GROUP
    qi = rows // GROUP  # query index within the request
    head = kv_head * GROUP + rows % GROUP
    dims = tl.arange(0, HEAD_DIM)
    token = (start + qi).to(tl.int64)
    q = tl.load(q_ptr + token[:, None] * stride_qn + head[:, None] * stride_qh + dims[None, :],
                mask=row_ok[:, None], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    cols = tl.arange(0, BLOCK_N)
    bt_row = bt_ptr + b.to(tl.int64) * stride_bt
    k_head = k_ptr + kv_head.to(tl.int64) * stride_kh
    v_head = v_ptr + kv_head.to(tl.int64) * stride_vh

    # Phase 1: the prefix, visible to every query.
    for kv_start in range(0, prefix, BLOCK_N):
        pos = kv_start + cols
        ok = pos < prefix
        k, v = load_kv_tile(k_head, v_head, bt_row, pos, ok, dims, page_size, stride_kp, stride_kt, stride_vp,
                             stride_vt)
        acc, m_i, l_i = _attend(acc, m_i, l_i, q, k, v, row_ok[:, None] & ok[None, :], scale_log2, UPCAST)

    # Phase 2: the new tokens, under the ancestor bits (or causal).
    for new_start in range(0, n, BLOCK_N):
        j = new_start + cols
        ok = j < n
        pos = prefix + j
        k, v = load_kv_tile(k_head, v_head, bt_row, pos, ok, dims, page_size, stride_kp, stride_kt, stride_vp,
                             stride_vt)
        visible = row_ok[:, None] & ok[None, :]
        if HAS_MASK:
            word = tl.load(mask_ptr + token[:, None] * stride_mask + (j >> 5)[None, :], mask=visible, other=0)
            visible = visible & (((word >> (j & 31)[None, :]) & 1) != 0)
        else:
            visible = visible & (j[None, :] <= qi[:, None])
        acc, m_i, l_i = _attend(acc, m_i, l_i, q, k, v, visible, scale_log2, UPCAST)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    o = acc / l_safe[:, None]
    tl.store(out_ptr + token[:, None] * stride_on + head[:, None] * stride_oh + dims[None, :],
             o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
    if HAS_LSE:
        lse = tl.where(l_i == 0.0, float("-inf"), (m_i + tl.log2(l_safe)) / 1.4426950408889634)
        tl.store(lse_ptr + token * stride_ln + head, lse, mask=row_ok)


def tree_attention(out: torch.Tensor, lse: torch.Tensor | None, q: torch.Tensor, k_cache: torch.Tensor,
                   v_cache: torch.Tensor, block_tables: torch.Tensor, prefix_lens: torch.Tensor,
                   qo_indptr: torch.Tensor, tree_mask: torch.Tensor | None, max_q_len: int, sm_scale: float,
                   num_kv_splits: int) -> None:
    """Out-variant launcher (the schema's signature); ``num_kv_splits`` is a CUDA-only knob, ignored."""
    n_total, num_qo_heads, head_dim = q.shape
    batch, num_kv_heads = block_tables.shape[0], k_cache.shape[2]
    group = num_qo_heads // num_kv_heads
    if n_total == 0 or batch == 0:
        return
    interpret = os.environ.get("TRITON_INTERPRET") == "1" and q.device.type == "cpu"
    block_m = 16 if interpret else 64
    block_n = 16 if interpret else 64
    grid = (triton.cdiv(max_q_len * group, block_m), batch, num_kv_heads)
    _tree_attention_kernel[grid](
        out, lse if lse is not None else out, q, k_cache, v_cache, block_tables, prefix_lens, qo_indptr,
        tree_mask if tree_mask is not None else block_tables, sm_scale * LOG2E,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1),
        lse.stride(0) if lse is not None else 0, block_tables.stride(0),
        tree_mask.stride(0) if tree_mask is not None else 0, k_cache.shape[1],
        GROUP=group, HEAD_DIM=head_dim, HAS_MASK=tree_mask is not None, HAS_LSE=lse is not None, UPCAST=interpret,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4, num_stages=2)
