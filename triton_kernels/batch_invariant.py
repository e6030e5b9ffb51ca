"""Batch-invariant Triton kernels: a row's result is bitwise independent of the other rows in the launch.

cuBLAS picks a GEMM algorithm (tile shape, split-K) per problem size and paged-attention kernels tile
and split a query's keys by the batch's layout, so the same token computed inside a 1-row decode and
inside a (K+1)-row verify chain rounds differently. These kernels fix every choice that touches a
row's arithmetic to something that does not depend on how many rows there are:

- ``linear``: y = x W^T (+ b). One tile configuration per (N, K) (:func:`matmul_config`), no split-K;
  each output element is one fp32 accumulator walked over K in BLOCK_K steps in the same order, whatever
  M is. M is not specialized (``do_not_specialize``), so M = 1 runs the same binary as M = 37.
- ``attention``: one program per (query, kv head) walks the query's visible keys [0, pos] in 64-key tiles
  aligned to absolute positions, online softmax in fp32. A decode at prefix L + i and row i of a verify
  chain over prefix L see the same tiles with the same contents (keys past pos are masked to exactly 0
  and never loaded), so they compute the same bits. No split-KV.

Under the CPU interpreter the products are fp32 broadcast-and-sum instead of ``tl.dot`` (whose numpy
matmul is slow there and, in low precision, untrustworthy); the indexing and masking are the same code.

Cost: no split-KV means one program walks a whole context (long contexts at small batch are slower than
the split kernels); the GEMM tile is sized for M <= 32 and is not tuned per M.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from ssdk.ops._checks import row_stride
from ssdk.triton_kernels.attention import load_kv_tile
from ssdk.triton_kernels.linear import linear_tile

LOG2E = 1.4426950408889634
ATTN_BLOCK_N = 64  # keys per tile, aligned to absolute positions


def _interpreting(t: torch.Tensor) -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1" and t.device.type == "cpu"


def matmul_config(n: int, k: int, interpret: bool = False) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of ``linear``: a function of N and K only.

    Small M is memory bound: the weight is streamed once per 32 rows, so BLOCK_N shrinks until there are
    about two waves of CTAs over N on a 132-SM GPU. The CPU interpreter pays per program: wide tiles.
    """
    block_n = 128 if interpret else 64 if n >= 64 * 256 else 32 if n >= 32 * 256 else 16
    block_k = 128 if block_n >= 64 else 256
    block_k = min(block_k, max(16, triton.next_power_of_2(k)))
    return 32, block_n, block_k, 4, 4


@triton.jit(do_not_specialize=["M"])
def _linear_kernel(y_ptr, x_ptr, w_ptr, b_ptr, M, N, K, stride_ym, stride_xm, stride_wn,
                   HAS_BIAS: tl.constexpr, USE_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)  # M tiles of one N tile run together (W shared in L2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    linear_tile(y_ptr, x_ptr, w_ptr, b_ptr, rm, rn, M, N, K, stride_ym, stride_xm, stride_wn, HAS_BIAS, USE_DOT,
                False, BLOCK_M, BLOCK_N, BLOCK_K)


def linear(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Out-variant launcher: out [..., N] = x [..., K] @ weight[N, K]^T (+ bias [N])."""
    n, k = weight.shape
    m = x.numel() // k if k else 0
    if m == 0 or n == 0:
        return
    interpret = _interpreting(x)
    block_m, block_n, block_k, warps, stages = matmul_config(n, k, interpret)
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _linear_kernel[grid](out, x, weight, bias if bias is not None else weight, m, n, k, row_stride(out),
                         row_stride(x), weight.stride(0), HAS_BIAS=bias is not None, USE_DOT=not interpret,
                         BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps, num_stages=stages)


@triton.jit
def _attention_kernel(out_ptr, q_ptr, k_ptr, v_ptr, bt_ptr, prefix_ptr, indptr_ptr, mask_ptr, scale_log2,
                      stride_qn, stride_qh, stride_kp, stride_kt, stride_kh, stride_vp, stride_vt, stride_vh,
                      stride_on, stride_oh, stride_bt, stride_mask, page_size,
                      GROUP: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_MASK: tl.constexpr,
                      INTERPRET: tl.constexpr, BLOCK_N: tl.constexpr):
    i, b, kv_head = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(indptr_ptr + b)
    n = tl.load(indptr_ptr + b + 1) - start
    if i >= n:
        return
    prefix = tl.load(prefix_ptr + b)
    token = (start + i).to(tl.int64)
    hs = tl.arange(0, BLOCK_H)
    h_ok = hs < GROUP
    head = kv_head * GROUP + hs
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + token * stride_qn + head[:, None] * stride_qh + dims[None, :], mask=h_ok[:, None], other=0.0)
    # Keys [0, end): causal = up to the query's own position; a tree sees the prefix + its ancestor bits.
    end = prefix + n if HAS_MASK else prefix + i + 1

    acc = tl.zeros((BLOCK_H, HEAD_DIM), dtype=tl.float32)
    m_i = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
    cols = tl.arange(0, BLOCK_N)
    bt_row = bt_ptr + b.to(tl.int64) * stride_bt
    k_head = k_ptr + kv_head.to(tl.int64) * stride_kh
    v_head = v_ptr + kv_head.to(tl.int64) * stride_vh
    for kv_start in range(0, end, BLOCK_N):
        pos = kv_start + cols
        ok = pos < end
        if HAS_MASK:
            j = pos - prefix  # index among the request's new tokens (< 0: prefix)
            is_new = ok & (j >= 0)
            word = tl.load(mask_ptr + token * stride_mask + (j >> 5), mask=is_new, other=0)
            ok = ok & ((j < 0) | (((word >> (j & 31)) & 1) != 0))
        k, v = load_kv_tile(k_head, v_head, bt_row, pos, ok, dims, page_size, stride_kp, stride_kt, stride_vp,
                             stride_vt)
        if INTERPRET:
            s = tl.sum(q.to(tl.float32)[:, None, :] * k.to(tl.float32)[None, :, :], axis=2) * scale_log2
        else:
            s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale_log2
        s = tl.where(ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        if INTERPRET:
            acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
        m_i = m_new

    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(out_ptr + token * stride_on + head[:, None] * stride_oh + dims[None, :], o.to(out_ptr.dtype.element_ty),
             mask=h_ok[:, None])


def attention(out: torch.Tensor, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              block_tables: torch.Tensor, prefix_lens: torch.Tensor, qo_indptr: torch.Tensor,
              tree_mask: torch.Tensor | None, max_q_len: int, sm_scale: float) -> None:
    """Out-variant launcher (semantics: ssdk.ops.batch_invariant_attention)."""
    n_total, num_qo_heads, head_dim = q.shape
    batch, num_kv_heads = block_tables.shape[0], k_cache.shape[2]
    if n_total == 0 or batch == 0:
        return
    group = num_qo_heads // num_kv_heads
    grid = (max_q_len, batch, num_kv_heads)
    _attention_kernel[grid](
        out, q, k_cache, v_cache, block_tables, prefix_lens, qo_indptr,
        tree_mask if tree_mask is not None else block_tables, sm_scale * LOG2E,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1),
        block_tables.stride(0), tree_mask.stride(0) if tree_mask is not None else 0, k_cache.shape[1],
        GROUP=group, BLOCK_H=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        HAS_MASK=tree_mask is not None, INTERPRET=_interpreting(q), BLOCK_N=ATTN_BLOCK_N, num_warps=4, num_stages=2)
