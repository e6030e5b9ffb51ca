"""The attention context of the forward pass being run (set by the model runner, read by Attention).

Batch layout (the ``ssdk.ops.tree_attention`` convention): request b's new tokens are rows
``qo_indptr[b] .. qo_indptr[b+1]-1`` of the flattened batch; their K/V go to ``slot_mapping`` and
they attend to ``prefix_lens[b]`` cached tokens plus the new ones (causal, or ``tree_mask``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class Context:
    qo_indptr: torch.Tensor        # [B + 1] int32
    prefix_lens: torch.Tensor      # [B] int32
    block_tables: torch.Tensor     # [B, max_pages] int32
    slot_mapping: torch.Tensor     # [N] int64, -1 = do not store (CUDA-graph padding)
    max_q_len: int                 # host bound on new tokens per request
    tree_mask: torch.Tensor | None = None  # [N, W] int32 ancestor bits (None = causal)
    flashinfer: object | None = None       # a planned FlashInfer wrapper (attention_backend="flashinfer")


_context: Context | None = None


def get_context() -> Context:
    if _context is None:
        raise RuntimeError("ssdk: no attention context is set (run the model through ModelRunner)")
    return _context


@contextlib.contextmanager
def attention_context(ctx: Context) -> Iterator[Context]:
    global _context
    previous, _context = _context, ctx
    try:
        yield ctx
    finally:
        _context = previous
