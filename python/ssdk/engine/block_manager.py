"""Paged KV-cache bookkeeping: which physical pages each sequence owns (pure Python, no tensors).

A sequence of L tokens owns ceil(L / page_size) pages; token at position p lives in slot
``block_table[p // page_size] * page_size + p % page_size``. Pages are reference-free (no prefix
sharing): freeing a sequence returns all its pages.
"""

from __future__ import annotations

from collections import deque

from .sequence import Sequence


class BlockManager:
    def __init__(self, num_pages: int, page_size: int):
        if num_pages < 1 or page_size < 1:
            raise ValueError(f"ssdk: need num_pages >= 1 and page_size >= 1, got {num_pages}, {page_size}")
        self.num_pages = num_pages
        self.page_size = page_size
        self._free: deque[int] = deque(range(num_pages))

    @property
    def num_free_pages(self) -> int:
        return len(self._free)

    def pages_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    def missing_pages(self, seq: Sequence, num_tokens: int) -> int:
        """Pages ``seq`` still needs to hold ``num_tokens`` tokens."""
        return max(0, self.pages_for(num_tokens) - len(seq.block_table))

    def can_reserve(self, seq: Sequence, num_tokens: int) -> bool:
        return self.missing_pages(seq, num_tokens) <= len(self._free)

    def reserve(self, seq: Sequence, num_tokens: int) -> None:
        """Give ``seq`` pages for its first ``num_tokens`` tokens (prefill, decode, speculative lookahead)."""
        missing = self.missing_pages(seq, num_tokens)
        if missing > len(self._free):
            raise RuntimeError(f"ssdk: out of KV pages: sequence {seq.seq_id} needs {missing}, "
                               f"{len(self._free)} free (check can_reserve first)")
        seq.block_table.extend(self._free.popleft() for _ in range(missing))

    def truncate(self, seq: Sequence, num_tokens: int) -> None:
        """Free the pages past the first ``num_tokens`` tokens (speculative rollback)."""
        keep = self.pages_for(num_tokens)
        self._free.extend(seq.block_table[keep:])
        del seq.block_table[keep:]

    def free(self, seq: Sequence) -> None:
        self._free.extend(seq.block_table)
        seq.block_table.clear()
        seq.num_computed_tokens = 0

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.page_size] * self.page_size + position % self.page_size
