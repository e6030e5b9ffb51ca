"""CUDA graphs of the model forward + logits, one per batch-size bucket.

A graph serves batches where every request computes ``q_len`` new tokens (decode: 1; a speculative
verify chain: K + 1) with a causal mask. A batch of b requests replays the smallest bucket >= b; the
padding rows store no K/V (slot -1), see no prefix and are dropped. All inputs live in one int32 device
buffer that is refreshed by a single host-to-device copy per step.

``capture=False`` runs the same padded static-buffer forward eagerly instead of replaying a graph (the
CPU tests check the padding logic that way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .context import Context, attention_context

if TYPE_CHECKING:
    from .model_runner import BatchSpec, ModelRunner


def batch_buckets(max_batch: int) -> list[int]:
    return sorted({b for b in (1, 2, 4, 8, *range(16, max_batch + 1, 16)) if b <= max_batch} | {max_batch})


class GraphRunner:
    def __init__(self, runner: ModelRunner, max_batch: int, q_len: int = 1, capture: bool = True):
        self.runner, self.q_len, self.capture = runner, q_len, capture
        self.buckets = batch_buckets(max_batch)
        self.max_batch, pages = max_batch, runner.max_pages_per_seq
        rows = max_batch * q_len
        # [input_ids | positions | slot_mapping] (rows each) | prefix_lens (max_batch) | block_tables
        self.offsets = {"ids": 0, "pos": rows, "slots": 2 * rows, "prefix": 3 * rows, "tables": 3 * rows + max_batch}
        size = self.offsets["tables"] + max_batch * pages
        self.host = torch.zeros(size, dtype=torch.int32, pin_memory=capture)
        self.host_np = self.host.numpy()
        self.device_buf = torch.zeros(size, dtype=torch.int32, device=runner.device)
        self.host_np[2 * rows:3 * rows] = -1
        self.device_buf.copy_(self.host)
        o = self.offsets
        self.input_ids = self.device_buf[o["ids"]:o["ids"] + rows]
        self.positions = self.device_buf[o["pos"]:o["pos"] + rows]
        self.slot_mapping = self.device_buf[o["slots"]:o["slots"] + rows]
        self.prefix_lens = self.device_buf[o["prefix"]:o["prefix"] + max_batch]
        self.block_tables = self.device_buf[o["tables"]:].view(max_batch, pages)
        self.qo_indptr = torch.arange(0, (max_batch + 1) * q_len, q_len, dtype=torch.int32, device=runner.device)
        self._copied: torch.cuda.Event | None = None  # the last host-to-device copy of ``host``
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        if capture:
            self._capture()

    def _capture(self) -> None:
        pool = None
        for bs in reversed(self.buckets):  # largest first: the smaller graphs reuse its memory pool
            self._forward(bs)  # warm-up (lazy library initialization happens outside the capture)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool):
                self.logits[bs] = self._forward(bs)
            pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize(self.runner.device)

    @torch.inference_mode()
    def _forward(self, bs: int) -> torch.Tensor:
        rows = bs * self.q_len
        ctx = Context(qo_indptr=self.qo_indptr[:bs + 1], prefix_lens=self.prefix_lens[:bs],
                      block_tables=self.block_tables[:bs], slot_mapping=self.slot_mapping[:rows],
                      max_q_len=self.q_len)
        model = self.runner.model
        with attention_context(ctx):
            hidden = model(self.input_ids[:rows], self.positions[:rows])
        return model.compute_logits(hidden)

    def can_run(self, spec: BatchSpec) -> bool:
        bs = spec.batch_size
        return (spec.tree_mask is None and spec.logits_indices is None and bs <= self.max_batch
                and spec.qo_indptr[-1] == bs * self.q_len and spec.max_q_len == self.q_len)

    def run(self, spec: BatchSpec, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [rows, vocab] of ``spec``; ``input_ids``: optional device token ids replacing spec's."""
        bs = spec.batch_size
        bucket = next(b for b in self.buckets if b >= bs)
        rows, padded, o, h = bs * self.q_len, bucket * self.q_len, self.offsets, self.host_np
        if self._copied is not None:  # back-to-back runs without a host sync (speculative drafting):
            self._copied.synchronize()  # the previous copy must have read the pinned buffer
        h[o["ids"]:o["ids"] + rows] = spec.input_ids
        h[o["ids"] + rows:o["ids"] + padded] = 0
        h[o["pos"]:o["pos"] + rows] = spec.positions
        h[o["pos"] + rows:o["pos"] + padded] = 0
        h[o["slots"]:o["slots"] + rows] = spec.slot_mapping
        h[o["slots"] + rows:o["slots"] + padded] = -1
        h[o["prefix"]:o["prefix"] + bs] = spec.prefix_lens
        h[o["prefix"] + bs:o["prefix"] + bucket] = 0
        pages = self.block_tables.shape[1]
        for b, table in enumerate(spec.block_tables):
            start = o["tables"] + b * pages
            h[start:start + len(table)] = table
        used = o["tables"] + bucket * pages
        self.device_buf[:used].copy_(self.host[:used], non_blocking=True)
        if self.capture:
            self._copied = torch.cuda.Event()
            self._copied.record()
        if input_ids is not None:
            self.input_ids[:rows].copy_(input_ids.reshape(-1))
        if not self.capture:
            return self._forward(bucket)[:rows]
        self.graphs[bucket].replay()
        return self.logits[bucket][:rows]
