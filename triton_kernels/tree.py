"""Triton build_tree_mask: one program per request walks every node's parent chain in parallel (the
compact rows), then a second kernel fills each request's packed FlashInfer segment."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _ancestors_kernel(parents_ptr, qo_indptr_ptr, prefix_lens_ptr, positions_ptr, depth_ptr, mask_ptr,
                      W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    b = tl.program_id(0)
    start = tl.load(qo_indptr_ptr + b)
    n = tl.minimum(tl.load(qo_indptr_ptr + b + 1) - start, 32 * W)
    prefix = tl.load(prefix_lens_ptr + b)
    node = tl.arange(0, BLOCK_N)
    valid = node < n
    words = tl.arange(0, BLOCK_W)
    cur = tl.where(valid, node, -1)
    bits = tl.zeros([BLOCK_N, BLOCK_W], dtype=tl.int32)
    depth = tl.full([BLOCK_N], -1, dtype=tl.int32)
    while tl.max(cur, axis=0) >= 0:
        active = cur >= 0
        one = tl.full([BLOCK_N], 1, dtype=tl.int32) << (tl.maximum(cur, 0) & 31)
        hit = active[:, None] & (words[None, :] == (tl.maximum(cur, 0) >> 5)[:, None])
        bits = bits | tl.where(hit, one[:, None], 0)
        depth += active.to(tl.int32)
        parent = tl.load(parents_ptr + start + tl.maximum(cur, 0), mask=active, other=-1)
        cur = tl.where(active & (parent < cur), parent, -1)  # malformed parents end the walk
    tl.store(depth_ptr + start + node, depth, mask=valid)
    tl.store(positions_ptr + start + node, (prefix + depth).to(positions_ptr.dtype.element_ty), mask=valid)
    row = (start + node).to(tl.int64)
    tl.store(mask_ptr + row[:, None] * W + words[None, :], bits, mask=valid[:, None] & (words[None, :] < W))


@triton.jit
def _segment_bytes(qo_indptr_ptr, prefix_lens_ptr, b, packed_rows):
    n = tl.load(qo_indptr_ptr + b + 1) - tl.load(qo_indptr_ptr + b)
    rows = n
    if packed_rows > 0:
        rows = tl.minimum(n, packed_rows)
    return (rows.to(tl.int64) * (tl.load(prefix_lens_ptr + b) + n) + 7) // 8


@triton.jit
def _packed_kernel(qo_indptr_ptr, prefix_lens_ptr, mask_ptr, packed_ptr, mask_indptr_ptr, batch, packed_rows,
                   W: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    chunk = tl.program_id(1)
    chunks = tl.num_programs(1)
    others = tl.arange(0, BLOCK_B)
    lo = tl.load(qo_indptr_ptr + others, mask=others < batch, other=0)
    hi = tl.load(qo_indptr_ptr + others + 1, mask=others < batch, other=0)
    counts = hi - lo
    rows_all = counts
    if packed_rows > 0:
        rows_all = tl.minimum(counts, packed_rows)
    pl = tl.load(prefix_lens_ptr + others, mask=others < batch, other=0)
    sizes = (rows_all.to(tl.int64) * (pl + counts) + 7) // 8
    offset = tl.sum(tl.where(others < b, sizes, 0), axis=0)
    nbytes = _segment_bytes(qo_indptr_ptr, prefix_lens_ptr, b, packed_rows)
    if chunk == 0:
        tl.store(mask_indptr_ptr + b + 1, (offset + nbytes).to(tl.int32))
        if b == 0:
            tl.store(mask_indptr_ptr, 0)
    start = tl.load(qo_indptr_ptr + b)
    n = tl.minimum(tl.load(qo_indptr_ptr + b + 1) - start, 32 * W)
    prefix = tl.load(prefix_lens_ptr + b)
    rows = n
    if packed_rows > 0:
        rows = tl.minimum(n, packed_rows)
    first = n - rows
    cols = (prefix + n).to(tl.int64)
    total = rows.to(tl.int64) * cols
    for k0 in range(chunk * BLOCK, nbytes, chunks * BLOCK):
        k = k0 + tl.arange(0, BLOCK).to(tl.int64)
        byte = tl.zeros([BLOCK], dtype=tl.int32)
        for t in tl.static_range(8):
            bit = k * 8 + t
            r = bit // cols
            c = bit - r * cols
            j = (c - prefix).to(tl.int32)
            in_tree = (bit < total) & (c >= prefix)
            word = tl.load(mask_ptr + (start + first + r) * W + (tl.maximum(j, 0) >> 5), mask=in_tree, other=0)
            tree_bit = (word >> (tl.maximum(j, 0) & 31)) & 1
            val = tl.where(bit < total, tl.where(c < prefix, 1, tree_bit), 0)
            byte = byte | (val << t)
        tl.store(packed_ptr + offset + k, byte.to(tl.uint8), mask=k < nbytes)


def build_tree_mask(parents: torch.Tensor, qo_indptr: torch.Tensor, prefix_lens: torch.Tensor, positions: torch.Tensor,
                    depth: torch.Tensor, tree_mask: torch.Tensor, packed_mask: torch.Tensor | None,
                    mask_indptr: torch.Tensor | None, packed_rows: int) -> None:
    batch = qo_indptr.numel() - 1
    words = tree_mask.shape[1]
    if batch == 0:
        if mask_indptr is not None:
            mask_indptr.zero_()
        return
    _ancestors_kernel[(batch,)](parents, qo_indptr, prefix_lens, positions, depth, tree_mask, W=words,
                                BLOCK_N=triton.next_power_of_2(32 * words), BLOCK_W=triton.next_power_of_2(words))
    if packed_mask is not None:
        chunks = max(1, min(16, 264 // batch))
        _packed_kernel[(batch, chunks)](qo_indptr, prefix_lens, tree_mask, packed_mask, mask_indptr, batch, packed_rows,
                                        W=words, BLOCK_B=triton.next_power_of_2(batch), BLOCK=256)
