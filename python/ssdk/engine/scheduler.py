"""Continuous batching: admit waiting requests (chunked prefill), decode running ones, preempt on OOM.

A step is either a prefill step (waiting sequences, at most ``max_num_batched_tokens`` tokens; the last
one may be a partial chunk that continues next step) or a decode step (every running sequence, one
token each). When a decode step runs out of KV pages, the most recently admitted sequences are
preempted: their pages are freed and they go back to the front of the queue, to be recomputed from
their prompt + generated tokens (no request is lost, and its output does not change under greedy).
"""

from __future__ import annotations

import time
from collections import deque

from .block_manager import BlockManager
from .sequence import Sequence, Status


class Scheduler:
    def __init__(self, block_manager: BlockManager, *, max_num_seqs: int, max_num_batched_tokens: int,
                 max_model_len: int, eos_token_ids: tuple[int, ...] = (), lookahead: int = 0):
        """``lookahead``: extra tokens of KV space each decoding sequence must hold (speculative drafts)."""
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.eos_token_ids = frozenset(eos_token_ids)
        self.lookahead = lookahead
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        if seq.num_tokens >= self.max_model_len:
            raise ValueError(f"ssdk: prompt of {seq.num_tokens} tokens leaves no room to generate within "
                             f"max_model_len={self.max_model_len}")
        bm = self.block_manager
        needed = bm.pages_for(min(seq.num_tokens + seq.params.max_tokens, self.max_model_len) + self.lookahead)
        if needed > bm.num_pages:
            raise ValueError(f"ssdk: a request of {seq.num_tokens} prompt + {seq.params.max_tokens} output tokens "
                             f"needs {needed} KV pages but the cache has {bm.num_pages}; lower max_tokens or "
                             "give the KV cache more memory")
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> tuple[list[Sequence], bool]:
        """Pick the next step's sequences (each with ``num_scheduled_tokens`` set); True = prefill step."""
        seqs = self._schedule_prefill()
        if seqs:
            return seqs, True
        return self._schedule_decode(), False

    def _schedule_prefill(self) -> list[Sequence]:
        bm, budget, scheduled = self.block_manager, self.max_num_batched_tokens, []
        while self.waiting and budget and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not seq.block_table:  # not admitted yet: all its current tokens must fit
                if not bm.can_reserve(seq, seq.num_tokens):
                    break
                bm.reserve(seq, seq.num_tokens)
                if seq.metrics.first_scheduled is None:
                    seq.metrics.first_scheduled = time.perf_counter()
            chunk = min(seq.num_tokens - seq.num_computed_tokens, budget)
            seq.num_scheduled_tokens = chunk
            budget -= chunk
            scheduled.append(seq)
            if seq.num_computed_tokens + chunk < seq.num_tokens:
                break  # partial chunk: it stays first in line and continues next step
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
        return scheduled

    def _schedule_decode(self) -> list[Sequence]:
        bm, scheduled = self.block_manager, []
        while self.running:
            seq = self.running.popleft()
            need = seq.num_tokens + self.lookahead  # running: num_tokens < max_model_len
            while not bm.can_reserve(seq, need):
                if self.running:
                    self._preempt(self.running.pop())
                else:
                    self._preempt(seq)
                    break
            else:
                bm.reserve(seq, need)
                seq.num_scheduled_tokens = seq.num_tokens - seq.num_computed_tokens
                scheduled.append(seq)
        self.running.extend(scheduled)
        return scheduled

    def schedule_ahead(self, seqs: list[Sequence]) -> bool:
        """Schedule the decode step after the one in flight for ``seqs`` (whose tokens are not known yet),
        if that step is certain to be the next one: no waiting request can be admitted, ``seqs`` are exactly
        the running sequences, none finishes by length in the step in flight, and every one gets a page for
        its pending token without preempting. Reserves those pages and returns True, else changes nothing.
        A sequence that the step in flight ends (EOS, stop token) wastes its row of the step ahead."""
        admissible = self.waiting and len(self.running) < self.max_num_seqs
        if admissible or len(seqs) != len(self.running) or any(a is not b for a, b in zip(seqs, self.running)):
            return False
        bm, missing = self.block_manager, 0
        for seq in seqs:
            if seq.num_output_tokens + 1 >= seq.params.max_tokens or seq.num_tokens + 1 >= self.max_model_len:
                return False
            missing += bm.missing_pages(seq, seq.num_tokens + 1 + self.lookahead)
        if missing > bm.num_free_pages:
            return False
        for seq in seqs:
            bm.reserve(seq, seq.num_tokens + 1 + self.lookahead)
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.status = Status.WAITING
        seq.metrics.num_preemptions += 1
        self.num_preemptions += 1
        # A partially prefilled head keeps its pages and its place: it must finish first.
        head_in_prefill = bool(self.waiting and self.waiting[0].block_table)
        self.waiting.insert(1 if head_in_prefill else 0, seq)

    def postprocess(self, seqs: list[Sequence], sampled: list[int | list[int] | None]) -> list[Sequence]:
        """Account a finished step: ``sampled[i]`` is seqs[i]'s new token, or its new tokens in order (a
        speculative round; tokens after the one that finishes the request are dropped), or None (a partial
        prefill chunk). Returns the sequences that finished (their pages are freed)."""
        now, finished = time.perf_counter(), []
        for seq, tokens in zip(seqs, sampled, strict=True):
            seq.num_computed_tokens += seq.num_scheduled_tokens
            seq.num_scheduled_tokens = 0
            if tokens is None:
                continue
            if seq.metrics.first_token is None:
                seq.metrics.first_token = now
            for token in [tokens] if isinstance(tokens, int) else tokens:
                seq.append_token(token)
                reason = self._finish_reason(seq, token)
                if reason is not None:
                    seq.finish_reason, seq.status, seq.metrics.finished = reason, Status.FINISHED, now
                    self.block_manager.free(seq)
                    self.running.remove(seq)
                    finished.append(seq)
                    break
        return finished

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        params = seq.params
        if token in params.stop_token_ids or (not params.ignore_eos and token in self.eos_token_ids):
            return "stop"
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None
