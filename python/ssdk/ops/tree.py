"""Draft-tree description on the GPU: depths, positions, ancestor bitmasks, FlashInfer's packed mask.

A batch of B trees is given by
  parents    [N_total] int32: local parent index within the request, -1 = attached to the committed
             prefix; nodes topologically ordered (parent < child);
  qo_indptr  [B+1] int32: request b owns nodes qo_indptr[b] .. qo_indptr[b+1]-1 (n_b nodes);
  prefix_lens [B] int32: committed tokens before the tree (fully visible to every node).
Nothing here synchronizes with the host: sizes come from host ints and tensor shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import _C
from ..ref import tree as ref
from . import _backend
from ._checks import check_dtype, check_same_device, check_shape, check_tensor

MAX_MASK_WORDS = 32  # 1024 nodes per request


class TreeMask(NamedTuple):
    """Outputs of :func:`build_tree_mask`."""

    positions: torch.Tensor          # [N_total] int32/int64: prefix_len + depth
    depth: torch.Tensor              # [N_total] int32: 0 for nodes attached to the prefix
    tree_mask: torch.Tensor          # [N_total, W] int32 compact ancestor bitmask
    packed_mask: torch.Tensor | None  # [>= mask_indptr[B]] uint8, FlashInfer custom mask (packed)
    mask_indptr: torch.Tensor | None  # [B+1] int32 byte offsets of each request's packed segment


def _check_index(t: object, name: str, shape: tuple[int, ...], ref_t: torch.Tensor, ref_name: str,
                 dtypes: tuple[torch.dtype, ...] = (torch.int32,)) -> None:
    check_tensor(t, name)
    check_dtype(t, name, dtypes)
    check_same_device(t, name, ref_t, ref_name)
    check_shape(t, name, shape)
    if not t.is_contiguous():
        raise ValueError(f"ssdk: {name} must be contiguous, got strides {t.stride()}")


def packed_mask_bytes(qo_indptr: torch.Tensor, prefix_lens: torch.Tensor, packed_rows: int = 0) -> int:
    """Bytes :func:`build_tree_mask` writes into packed_mask (synchronizes with the host: use it to size a
    preallocated buffer once, outside CUDA-graph capture)."""
    counts = (qo_indptr[1:] - qo_indptr[:-1]).long()
    rows = counts if packed_rows <= 0 else counts.clamp(max=packed_rows)
    return int(((rows * (prefix_lens.long() + counts) + 7) // 8).sum())


def build_tree_mask(parents: torch.Tensor, qo_indptr: torch.Tensor, prefix_lens: torch.Tensor, mask_words: int, *,
                    packed: bool = True, packed_rows: int = 0, packed_capacity: int | None = None,
                    positions: torch.Tensor | None = None, depth: torch.Tensor | None = None,
                    tree_mask: torch.Tensor | None = None, packed_mask: torch.Tensor | None = None,
                    mask_indptr: torch.Tensor | None = None) -> TreeMask:
    """Depths, positions, compact ancestor bitmasks and FlashInfer's packed custom mask of B trees.

    Parameters
    ----------
    parents : [N_total] int32, local parent (-1 = attached to the prefix), parent < child.
    qo_indptr : [B+1] int32, node ranges per request.
    prefix_lens : [B] int32, committed prefix length per request.
    mask_words : W, words per compact-mask row; every request must have n_b <= 32 * W nodes
        (not checked on the device: larger trees lose the bits of nodes >= 32 * W). W <= 32.
    packed : also build the packed mask and mask_indptr.
    packed_rows : rows of each request's packed mask: its last ``packed_rows`` nodes (SSD's draft step
        queries only the newest nodes); 0 = all n_b nodes.
    packed_capacity : bytes to allocate for packed_mask when it is None; if both are None the size is
        computed with :func:`packed_mask_bytes` (a host sync).
    positions, depth, tree_mask, packed_mask, mask_indptr : optional preallocated outputs.

    Returns
    -------
    TreeMask with
      positions [N_total] (int32, or the given buffer's int64): prefix_len_b + depth;
      depth [N_total] int32: number of ancestors (0 for nodes attached to the prefix);
      tree_mask [N_total, W] int32: row qo_indptr[b]+i has bit j (word j >> 5, bit j & 31) set iff local
        node j is i or an ancestor of i; bits >= n_b are 0;
      packed_mask [bytes] uint8: per request, r_b rows (its last r_b nodes) x (prefix_len_b + n_b) columns,
        row-major, prefix columns 1, tree columns = the ancestor bits, packed little-endian within each
        byte (flashinfer.packbits(bitorder="little")); each request starts on a byte boundary;
      mask_indptr [B+1] int32: byte offset of each request's segment (FlashInfer's mask_indptr).
    """
    check_tensor(parents, "parents")
    check_dtype(parents, "parents", (torch.int32,))
    if parents.dim() != 1 or not parents.is_contiguous():
        raise ValueError(f"ssdk: parents must be a contiguous 1-D tensor, got shape {tuple(parents.shape)}")
    check_tensor(qo_indptr, "qo_indptr")
    if qo_indptr.dim() != 1 or qo_indptr.numel() < 1:
        raise ValueError(f"ssdk: qo_indptr must have shape [B+1], got {tuple(qo_indptr.shape)}")
    batch = qo_indptr.numel() - 1
    _check_index(qo_indptr, "qo_indptr", (batch + 1,), parents, "parents")
    _check_index(prefix_lens, "prefix_lens", (batch,), parents, "parents")
    if not isinstance(mask_words, int) or isinstance(mask_words, bool) or not 1 <= mask_words <= MAX_MASK_WORDS:
        raise ValueError(f"ssdk: mask_words must be an int in [1, {MAX_MASK_WORDS}], got {mask_words!r}")
    if not isinstance(packed_rows, int) or packed_rows < 0:
        raise ValueError(f"ssdk: packed_rows must be a non-negative int, got {packed_rows!r}")
    n_total = parents.numel()
    device = parents.device
    if positions is None:
        positions = torch.empty(n_total, dtype=torch.int32, device=device)
    _check_index(positions, "positions", (n_total,), parents, "parents", (torch.int32, torch.int64))
    if depth is None:
        depth = torch.empty(n_total, dtype=torch.int32, device=device)
    _check_index(depth, "depth", (n_total,), parents, "parents")
    if tree_mask is None:
        tree_mask = torch.empty(n_total, mask_words, dtype=torch.int32, device=device)
    _check_index(tree_mask, "tree_mask", (n_total, mask_words), parents, "parents")
    if packed:
        if packed_mask is None:
            size = packed_capacity if packed_capacity is not None else packed_mask_bytes(qo_indptr, prefix_lens,
                                                                                          packed_rows)
            packed_mask = torch.empty(size, dtype=torch.uint8, device=device)
        check_tensor(packed_mask, "packed_mask")
        check_dtype(packed_mask, "packed_mask", (torch.uint8,))
        check_same_device(packed_mask, "packed_mask", parents, "parents")
        if packed_mask.dim() != 1 or not packed_mask.is_contiguous():
            raise ValueError(f"ssdk: packed_mask must be a contiguous 1-D tensor, got shape {tuple(packed_mask.shape)}")
        if mask_indptr is None:
            mask_indptr = torch.empty(batch + 1, dtype=torch.int32, device=device)
        _check_index(mask_indptr, "mask_indptr", (batch + 1,), parents, "parents")
    else:
        packed_mask = mask_indptr = None
    _backend.impl("build_tree_mask", device)(parents, qo_indptr, prefix_lens, positions, depth, tree_mask,
                                             packed_mask, mask_indptr, packed_rows)
    return TreeMask(positions, depth, tree_mask, packed_mask, mask_indptr)


def ssd_draft_tree(K: int, fan_out: list[int], step: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Parents [K + 1 + (step + 1) * sum(fan_out)] int32 of SSD's (Saguaro) draft tree after draft step ``step``.

    Node 0 is the recovery token and nodes 1..K the drafted tokens (the glue chain, parent = previous
    node). Glue node g forks fan_out[g] branches; branch q (in order of g, then fork) gets one node per
    draft step s = 0..step at index K + 1 + s * sum(fan_out) + q, a chain hanging off its glue node. With
    K=6 and fan_out=[3]*7 the full tree (step = K-1) has 133 nodes. Host-built and tiny: build it once
    per shape and reuse. The queries of draft step s are the last sum(fan_out) nodes: pass
    ``packed_rows=sum(fan_out)`` to :func:`build_tree_mask` for the masks SSD's draft attention uses.
    """
    return torch.tensor(ref.ssd_draft_tree(K, list(fan_out), step), dtype=torch.int32, device=device)


def _triton_build_tree_mask(*args):
    from ..triton_kernels import tree as triton_tree

    return triton_tree.build_tree_mask(*args)


_backend.register("build_tree_mask", cuda=torch.ops.ssdk.build_tree_mask if _C is not None and
                  hasattr(torch.ops.ssdk, "build_tree_mask") else None,
                  triton=_triton_build_tree_mask, torch=ref.build_tree_mask_out)

if _C is not None and hasattr(torch.ops.ssdk, "build_tree_mask"):
    @torch.library.register_fake("ssdk::build_tree_mask")
    def _(parents, qo_indptr, prefix_lens, positions, depth, tree_mask, packed_mask, mask_indptr, packed_rows):
        return None
