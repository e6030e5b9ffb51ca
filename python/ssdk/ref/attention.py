"""Reference tree attention over a paged KV cache (dense masked attention in fp32).

See :func:`ssdk.ops.tree_attention` for the semantics. This module is the test ground truth and the
CPU path; it loops over requests on the host (``.tolist()``), which the CUDA/Triton kernels never do.
"""

from __future__ import annotations

import torch


def pack_ancestor_bits(visible: torch.Tensor, words: int | None = None) -> torch.Tensor:
    """Pack a dense [n, n] bool "query i may attend new token j" matrix into [n, W] int32 words.

    Bit j of row i lives in word ``j >> 5`` at bit ``j & 31`` (little-endian within the word).
    """
    n = visible.shape[0]
    words = words if words is not None else (n + 31) // 32
    padded = torch.zeros(n, words * 32, dtype=torch.int64, device=visible.device)
    padded[:, : visible.shape[1]] = visible.to(torch.int64)
    weights = torch.bitwise_left_shift(torch.ones(32, dtype=torch.int64, device=visible.device),
                                       torch.arange(32, device=visible.device))
    packed = (padded.view(n, words, 32) * weights).sum(-1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_ancestor_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_ancestor_bits`: [rows, W] int32 -> [rows, n] bool."""
    j = torch.arange(n, device=packed.device)
    word = packed[:, j >> 5].to(torch.int64) & 0xFFFFFFFF
    return ((word >> (j & 31)) & 1).bool()


def tree_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                   prefix_lens: torch.Tensor, qo_indptr: torch.Tensor, tree_mask: torch.Tensor | None,
                   sm_scale: float, compute_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (out [N, Hq, D], lse [N, Hq] natural log), both fp32.

    A query row that sees no key (prefix 0 and an empty mask row) gets out = 0 and lse = -inf.
    ``compute_dtype`` is the dtype of every step (fp32: the ground truth; the input dtype: the
    "same-dtype PyTorch" baseline of FlashAttention's error rule).
    """
    n_total, num_qo_heads, head_dim = q.shape
    page_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_qo_heads // num_kv_heads
    out = torch.zeros(n_total, num_qo_heads, head_dim, dtype=torch.float32, device=q.device)
    lse = torch.full((n_total, num_qo_heads), float("-inf"), dtype=torch.float32, device=q.device)
    indptr, prefixes = qo_indptr.tolist(), prefix_lens.tolist()
    for b, prefix in enumerate(prefixes):
        start, end = indptr[b], indptr[b + 1]
        n = end - start
        if n == 0:
            continue
        pos = torch.arange(prefix + n, device=q.device)
        pages = block_tables[b, pos // page_size].long()
        k = k_cache[pages, pos % page_size].to(compute_dtype).repeat_interleave(group, dim=1)  # [L, Hq, D]
        v = v_cache[pages, pos % page_size].to(compute_dtype).repeat_interleave(group, dim=1)
        scores = torch.einsum("ihd,jhd->hij", q[start:end].to(compute_dtype), k) * sm_scale  # [Hq, n, L]
        if tree_mask is None:
            new_visible = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        else:
            new_visible = unpack_ancestor_bits(tree_mask[start:end], n)
        visible = torch.cat([torch.ones(n, prefix, dtype=torch.bool, device=q.device), new_visible], dim=1)
        scores = scores.masked_fill(~visible, float("-inf"))
        lse_b = torch.logsumexp(scores, dim=-1)  # [Hq, n]
        probs = torch.exp(scores - lse_b.nan_to_num(neginf=0.0)[..., None])  # empty rows: exp(-inf) = 0
        out[start:end] = torch.einsum("hij,jhd->ihd", probs, v).float()
        lse[start:end] = lse_b.t().float()
    return out, lse


def tree_attention_out(out: torch.Tensor, lse: torch.Tensor | None, q: torch.Tensor, k_cache: torch.Tensor,
                       v_cache: torch.Tensor, block_tables: torch.Tensor, prefix_lens: torch.Tensor,
                       qo_indptr: torch.Tensor, tree_mask: torch.Tensor | None, max_q_len: int, sm_scale: float,
                       num_kv_splits: int) -> None:
    """Out-variant adaptor with the schema's signature (the torch backend)."""
    o, lse_ref = tree_attention(q, k_cache, v_cache, block_tables, prefix_lens, qo_indptr, tree_mask, sm_scale)
    out.copy_(o)
    if lse is not None:
        lse.copy_(lse_ref)


def to_flashinfer(block_tables: torch.Tensor, prefix_lens: torch.Tensor, qo_indptr: torch.Tensor,
                  tree_mask: torch.Tensor | None, page_size: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same problem in FlashInfer's paged-prefill terms (host loop, as engines that use it do).

    Returns (kv_indptr [B+1], kv_indices [total pages], kv_last_page_len [B], custom_mask): the
    custom mask is the flattened dense bool [n_b, prefix_b + n_b] block of every request, prefix included.
    """
    indptr, prefixes = qo_indptr.tolist(), prefix_lens.tolist()
    kv_indptr, kv_indices, last_page_len, masks = [0], [], [], []
    for b, prefix in enumerate(prefixes):
        start, end = indptr[b], indptr[b + 1]
        n, kv_len = end - start, prefix + end - start
        num_pages = (kv_len + page_size - 1) // page_size
        kv_indices.append(block_tables[b, :num_pages])
        kv_indptr.append(kv_indptr[-1] + num_pages)
        last_page_len.append(kv_len - (num_pages - 1) * page_size if num_pages else 0)
        if tree_mask is None:
            new_visible = torch.ones(n, n, dtype=torch.bool, device=block_tables.device).tril()
        else:
            new_visible = unpack_ancestor_bits(tree_mask[start:end], n)
        prefix_visible = torch.ones(n, prefix, dtype=torch.bool, device=block_tables.device)
        masks.append(torch.cat([prefix_visible, new_visible], dim=1).flatten())
    device = block_tables.device
    return (torch.tensor(kv_indptr, dtype=torch.int32, device=device), torch.cat(kv_indices).int(),
            torch.tensor(last_page_len, dtype=torch.int32, device=device), torch.cat(masks))
