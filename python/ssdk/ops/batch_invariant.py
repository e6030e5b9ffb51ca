"""Batch-invariant ops: each row's result is bitwise independent of how many rows share the call.

The engine's ``batch_invariant=True`` mode (:class:`ssdk.engine.config.EngineConfig`) runs every layer
through these, so a token's logits are the same bits whether it is decoded alone, in a batch, or as a
row of a speculative verify chain; greedy speculative decoding then reproduces greedy autoregressive
decoding token for token on the GPU (SGLang's deterministic inference, Thinking Machines'
batch_invariant_ops). Backends: Triton (fixed tiles, no split-K / split-KV; see
``ssdk.triton_kernels.batch_invariant``) and a torch reference that is invariant by construction (one
row / one query at a time, for the CPU).

Row-wise ops that are already invariant need no variant: RoPE, silu_and_mul, store_kv_cache, argmax
sampling, verify, and RMSNorm (every backend's per-row arithmetic depends only on the hidden size; the
CUDA kernel's row reduction is a pairwise tree that gives the same bits for each of its launch shapes).
"""

from __future__ import annotations

import math

import torch

from ..ref import attention as ref_attention
from . import _backend
from ._checks import check_rows, out_or_new
from .attention import _check as _check_attention
from .linear import check_linear_args

LINEAR_DTYPES = (torch.float16, torch.bfloat16)


def batch_invariant_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight^T + bias`` with each output row independent of the number of rows (fp32 accumulation).

    Parameters
    ----------
    x : [..., K] fp16/bf16; leading dims collapsible into rows, last dim contiguous.
    weight : [N, K], x's dtype, last dim contiguous (nn.Linear layout).
    bias : optional [N], x's dtype.
    out : optional [..., N] output (x's dtype, last dim contiguous); allocated when None.

    Returns
    -------
    out : [..., N], the fp32 dot products rounded once to x's dtype (bias added in fp32).
    """
    check_linear_args(x, weight, bias, LINEAR_DTYPES)
    out = out_or_new(out, (*x.shape[:-1], weight.shape[0]), x, "x")
    check_rows(out, "out")
    _backend.impl("batch_invariant_linear", x.device)(out, x, weight, bias)
    return out


def batch_invariant_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                              block_tables: torch.Tensor, prefix_lens: torch.Tensor, qo_indptr: torch.Tensor,
                              tree_mask: torch.Tensor | None = None, *, max_q_len: int | None = None,
                              sm_scale: float | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`ssdk.ops.tree_attention` (same arguments and layout, no lse) computed per query over its keys
    in absolute-position order: query i of request b at position ``p = prefix_lens[b] + i`` reduces keys
    0..p (causal) in 64-key tiles aligned to position 0, so its output does not depend on the batch, on
    ``prefix_lens[b]`` vs ``i`` (a decode at prefix L + i equals row i of a chain over prefix L) or on
    the new tokens after it. With ``tree_mask`` the keys are the prefix + the row's ancestor bits.

    Parameters
    ----------
    q : [N_total, num_qo_heads, head_dim] fp16/bf16, head_dim in {64, 128}; last dim contiguous.
    k_cache, v_cache : [num_pages, page_size, num_kv_heads, head_dim], q's dtype (the new tokens' K/V
        already stored).
    block_tables : [batch, max_pages] int32; prefix_lens : [batch] int32; qo_indptr : [batch + 1] int32.
    tree_mask : optional [N_total, W] int32 ancestor bits over the request's new tokens (None = causal).
    max_q_len : host int >= every request's new-token count (default N_total).
    sm_scale : softmax scale (default 1 / sqrt(head_dim)).
    out : optional [N_total, num_qo_heads, head_dim] output in q's dtype (last dim contiguous).

    Returns
    -------
    out : [N_total, num_qo_heads, head_dim]; rows that see no key are 0.
    """
    max_q_len = q.shape[0] if max_q_len is None and isinstance(q, torch.Tensor) else max_q_len
    _check_attention(q, k_cache, v_cache, block_tables, prefix_lens, qo_indptr, tree_mask, max_q_len)
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    out = out_or_new(out, q.shape, q, "q")
    if out.stride(-1) != 1:
        raise ValueError(f"ssdk: out must be contiguous in its last dimension, got strides {out.stride()}")
    _backend.impl("batch_invariant_attention", q.device)(out, q, k_cache, v_cache, block_tables, prefix_lens,
                                                         qo_indptr, tree_mask, max_q_len, sm_scale)
    return out


# ---------------------------------------------------------------- backends

def _torch_linear(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Reference: one fp32 matrix-vector product per row (the same call whatever the row count)."""
    w = weight.float()
    rows = x.reshape(-1, x.shape[-1]).float()
    flat = out.view(-1, out.shape[-1])
    for r in range(rows.shape[0]):
        y = torch.mv(w, rows[r])
        flat[r] = y if bias is None else y + bias.float()


def _torch_attention(out: torch.Tensor, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     block_tables: torch.Tensor, prefix_lens: torch.Tensor, qo_indptr: torch.Tensor,
                     tree_mask: torch.Tensor | None, max_q_len: int, sm_scale: float) -> None:
    """Reference: each causal query as a decode over its own prefix (one query per call); tree masks go
    through the tree_attention reference one request at a time."""
    if tree_mask is not None:
        ref_attention.tree_attention_out(out, None, q, k_cache, v_cache, block_tables, prefix_lens, qo_indptr,
                                         tree_mask, max_q_len, sm_scale, 0)
        return
    one = torch.tensor([0, 1], dtype=torch.int32, device=q.device)
    indptr = qo_indptr.tolist()
    for b, prefix in enumerate(prefix_lens.tolist()):
        for i in range(indptr[b + 1] - indptr[b]):
            row = indptr[b] + i
            position = torch.tensor([prefix + i], dtype=torch.int32, device=q.device)
            o, _ = ref_attention.tree_attention(q[row:row + 1], k_cache, v_cache, block_tables[b:b + 1], position,
                                                one, None, sm_scale)
            out[row] = o[0]


def _triton(name: str):
    def run(*args):
        from ..triton_kernels import batch_invariant as triton_bi

        return getattr(triton_bi, name)(*args)

    return run


_backend.register("batch_invariant_linear", triton=_triton("linear"), torch=_torch_linear)
_backend.register("batch_invariant_attention", triton=_triton("attention"), torch=_torch_attention)
