"""Reference tree description ops (plain PyTorch, see ssdk.ops.tree for the semantics).

A batch of draft trees is described by ``parents [N_total] int32`` (local parent index within the
request, -1 = attached to the committed prefix, parent < child), ``qo_indptr [B+1] int32`` (request b
owns nodes qo_indptr[b] .. qo_indptr[b+1]-1) and ``prefix_lens [B] int32``.
"""

from __future__ import annotations

import torch


def check_tree(parents: torch.Tensor, qo_indptr: torch.Tensor) -> None:
    """Raise if a request's parents are not topologically ordered local indices (host sync)."""
    indptr = qo_indptr.tolist()
    par = parents.tolist()
    for b in range(len(indptr) - 1):
        for i in range(indptr[b + 1] - indptr[b]):
            p = par[indptr[b] + i]
            if not -1 <= p < i:
                raise ValueError(f"ssdk: parents[{indptr[b] + i}] = {p} (request {b}, local node {i}) must be in "
                                 f"[-1, {i - 1}]: nodes are topologically ordered, parent < child")


def ancestor_matrix(parents: torch.Tensor, qo_indptr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense per-request ancestor relation.

    Returns
    -------
    anc : [N_total, max_nodes] bool, row qo_indptr[b]+i, column j: local node j is i or an ancestor of i.
    depth : [N_total] int32, 0 for nodes attached to the prefix.
    """
    check_tree(parents, qo_indptr)
    device = parents.device
    counts = (qo_indptr[1:] - qo_indptr[:-1]).tolist()
    max_nodes = max(counts, default=0)
    n_total = parents.numel()
    anc = torch.zeros(n_total, max(max_nodes, 1), dtype=torch.bool, device=device)
    depth = torch.zeros(n_total, dtype=torch.int32, device=device)
    starts = qo_indptr[:-1].tolist()
    par = parents.tolist()
    anc_cpu = torch.zeros_like(anc, device="cpu")
    depth_cpu = torch.zeros_like(depth, device="cpu")
    for start, n in zip(starts, counts):
        for i in range(n):  # topological order: the parent's row is complete
            row = start + i
            p = par[row]
            if p >= 0:
                anc_cpu[row] = anc_cpu[start + p]
                depth_cpu[row] = depth_cpu[start + p] + 1
            anc_cpu[row, i] = True
    anc.copy_(anc_cpu[:, :max(max_nodes, 1)])
    depth.copy_(depth_cpu)
    return anc[:, :max_nodes], depth


def pack_bits_le(bits: torch.Tensor) -> torch.Tensor:
    """Pack a flat bool tensor into uint8, little-endian within each byte (flashinfer.packbits "little")."""
    n = bits.numel()
    padded = torch.zeros((n + 7) // 8 * 8, dtype=torch.uint8, device=bits.device)
    padded[:n] = bits.reshape(-1).to(torch.uint8)
    weights = (2 ** torch.arange(8, device=bits.device)).to(torch.uint8)
    return (padded.view(-1, 8) * weights).sum(-1).to(torch.uint8)


def packed_rows_of(n: int, packed_rows: int) -> int:
    """Rows of a request's packed mask: its last ``packed_rows`` nodes (all when <= 0)."""
    return n if packed_rows <= 0 else min(packed_rows, n)


def build_tree_mask(parents: torch.Tensor, qo_indptr: torch.Tensor, prefix_lens: torch.Tensor, mask_words: int,
                    packed_rows: int = 0) -> tuple[torch.Tensor, ...]:
    """Return (positions, depth, tree_mask, packed_mask, mask_indptr), see ssdk.ops.tree.build_tree_mask."""
    anc, depth = ancestor_matrix(parents, qo_indptr)
    n_total = parents.numel()
    device = parents.device
    max_nodes = anc.shape[1]
    if max_nodes > 32 * mask_words:
        raise ValueError(f"ssdk: a request has {max_nodes} nodes but mask_words={mask_words} holds {32 * mask_words}")
    starts = qo_indptr[:-1].long()
    counts = (qo_indptr[1:] - qo_indptr[:-1]).long()
    request = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    positions = (prefix_lens.long()[request] + depth.long()).to(torch.int32)

    bits = torch.zeros(n_total, 32 * mask_words, dtype=torch.int64, device=device)
    bits[:, :max_nodes] = anc.long()
    shifts = torch.arange(32, device=device, dtype=torch.int64)
    words = (bits.view(n_total, mask_words, 32) << shifts).sum(-1)  # < 2**32
    tree_mask = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)

    segments, sizes = [], []
    for b, (start, n, prefix) in enumerate(zip(starts.tolist(), counts.tolist(), prefix_lens.tolist())):
        rows = packed_rows_of(n, packed_rows)
        dense = torch.ones(rows, prefix + n, dtype=torch.bool, device=device)
        dense[:, prefix:] = anc[start + n - rows:start + n, :n]
        seg = pack_bits_le(dense)
        segments.append(seg)
        sizes.append(seg.numel())
    packed = torch.cat(segments) if segments else torch.zeros(0, dtype=torch.uint8, device=device)
    mask_indptr = torch.zeros(len(sizes) + 1, dtype=torch.int32, device=device)
    if sizes:
        mask_indptr[1:] = torch.tensor(sizes, device=device).cumsum(0)
    return positions, depth, tree_mask, packed, mask_indptr


def build_tree_mask_out(parents: torch.Tensor, qo_indptr: torch.Tensor, prefix_lens: torch.Tensor,
                        positions: torch.Tensor, depth: torch.Tensor, tree_mask: torch.Tensor,
                        packed_mask: torch.Tensor | None, mask_indptr: torch.Tensor | None, packed_rows: int) -> None:
    """Out-variant with the op schema's signature (the torch backend)."""
    pos, dep, mask, packed, indptr = build_tree_mask(parents, qo_indptr, prefix_lens, tree_mask.shape[1], packed_rows)
    positions.copy_(pos)
    depth.copy_(dep)
    tree_mask.copy_(mask)
    if packed_mask is not None:
        packed_mask[:packed.numel()].copy_(packed)
    if mask_indptr is not None:
        mask_indptr.copy_(indptr)


def dense_tree_mask(parents: torch.Tensor, qo_indptr: torch.Tensor, prefix_lens: torch.Tensor, max_nodes: int,
                    max_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What engines do today in plain torch, without host syncs: ancestor sets by pointer doubling
    (log2(max_nodes) rounds of anc |= anc[jump]; jump = jump[jump]) and the dense
    [N_total, max_prefix + max_nodes] bool mask (prefix columns visible up to each request's
    prefix_len). Benchmark baseline; returns (positions int64, dense mask)."""
    n_total = parents.numel()
    device = parents.device
    counts = qo_indptr[1:] - qo_indptr[:-1]
    request = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts, output_size=n_total)
    start = qo_indptr[:-1].long()[request]
    local = torch.arange(n_total, device=device) - start
    columns = torch.arange(max_nodes, device=device)
    anc = columns[None, :] == local[:, None]
    jump = torch.where(parents >= 0, start + parents.long(), -1)
    for _ in range(max(1, (max_nodes - 1).bit_length())):
        has = jump >= 0
        anc = anc | (anc[jump.clamp(min=0)] & has[:, None])
        jump = torch.where(has, jump[jump.clamp(min=0)], jump)
    prefix = prefix_lens.long()[request]
    positions = prefix + anc.sum(-1) - 1
    visible_prefix = torch.arange(max_prefix, device=device)[None, :] < prefix[:, None]
    return positions, torch.cat([visible_prefix, anc], dim=1)


def ssd_draft_tree(K: int, fan_out: list[int], step: int) -> list[int]:
    """Parents of SSD's draft tree after draft step ``step`` (see ssdk.ops.tree.ssd_draft_tree)."""
    if K < 0:
        raise ValueError(f"ssdk: K must be >= 0, got {K}")
    if len(fan_out) != K + 1 or any(f < 0 for f in fan_out):
        raise ValueError(f"ssdk: fan_out must list K+1={K + 1} non-negative fan-outs, got {fan_out}")
    if not 0 <= step:
        raise ValueError(f"ssdk: step must be >= 0, got {step}")
    parents = [-1] + list(range(K))  # glue chain: recovery token, then the K drafted tokens
    attach = [g for g, f in enumerate(fan_out) for _ in range(f)]  # branch -> glue node
    width = len(attach)
    for s in range(step + 1):
        base = K + 1 + (s - 1) * width
        parents += attach if s == 0 else [base + q for q in range(width)]
    return parents
