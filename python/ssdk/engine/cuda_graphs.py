"""CUDA graphs of the model forward + logits, one per batch-size bucket.

A graph serves batches where every request computes ``q_len`` new tokens (decode: 1; a speculative
verify chain: K + 1) with a causal mask. A batch of b requests replays the smallest bucket >= b; the
padding rows store no K/V (slot -1), see no prefix and are dropped. All inputs live in one int32 device
buffer that is refreshed by a single host-to-device copy per step.

``greedy=True`` also captures the greedy sampler (``ssdk.ops.sample_tokens`` at temperature 0) after
the LM head, so a greedy decode step is one replay whose only output the host reads is [B] token ids
(:meth:`GraphRunner.launch_greedy`); a step launched with ``input_ids`` taken from the previous step's
device tokens needs no host round trip at all (the engine's pipelined decode, see ``LLM.step``).

``capture=False`` runs the same padded static-buffer forward eagerly instead of replaying a graph (the
CPU tests check the padding logic that way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .. import ops
from .context import Context, attention_context

if TYPE_CHECKING:
    from .model_runner import BatchSpec, ModelRunner


def batch_buckets(max_batch: int) -> list[int]:
    return sorted({b for b in (1, 2, 4, 8, *range(16, max_batch + 1, 16)) if b <= max_batch} | {max_batch})


class PendingTokens:
    """Greedy tokens of a launched decode step: ``device`` [B] int64 (valid until the graph's next replay;
    feed it to the next step), and a pinned host copy that :meth:`wait` reads (one sync per step)."""

    def __init__(self, device: torch.Tensor, host: torch.Tensor, done: torch.cuda.Event | None):
        self.device, self._host, self._done = device, host, done

    def wait(self) -> list[int]:
        if self._done is not None:
            self._done.synchronize()
        return self._host.tolist()


class GraphRunner:
    def __init__(self, runner: ModelRunner, max_batch: int, q_len: int = 1, capture: bool = True,
                 greedy: bool = False):
        self.runner, self.q_len, self.capture, self.greedy = runner, q_len, capture, greedy
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
        self.tokens: dict[int, torch.Tensor] = {}  # greedy: [bucket] int64 argmax of each bucket's logits
        if greedy:
            self._temperature = torch.zeros(max_batch, dtype=torch.float32, device=runner.device)
            # two pinned slots: step n+1 is launched (and copies its tokens) before step n's are read
            self._tokens_host = [torch.zeros(max_batch, dtype=torch.int64, pin_memory=capture) for _ in range(2)]
            self._slot = 0
        if capture:
            self._capture()

    def _capture(self) -> None:
        pool = None
        for bs in reversed(self.buckets):  # largest first: the smaller graphs reuse its memory pool
            self._forward(bs)  # warm-up (lazy library initialization happens outside the capture)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool):
                self.logits[bs], self.tokens[bs] = self._forward(bs)
            pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize(self.runner.device)

    @torch.inference_mode()
    def _forward(self, bs: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits [rows, vocab], greedy tokens [rows] or None) of the padded static batch."""
        rows = bs * self.q_len
        ctx = Context(qo_indptr=self.qo_indptr[:bs + 1], prefix_lens=self.prefix_lens[:bs],
                      block_tables=self.block_tables[:bs], slot_mapping=self.slot_mapping[:rows],
                      max_q_len=self.q_len)
        model = self.runner.model
        with attention_context(ctx):
            hidden = model(self.input_ids[:rows], self.positions[:rows])
        logits = model.compute_logits(hidden)
        return logits, ops.sample_tokens(logits, self._temperature[:rows]) if self.greedy else None

    def release(self) -> None:
        """Destroy the captured graphs and their outputs (the runner cannot replay afterwards)."""
        for graph in self.graphs.values():
            graph.reset()
        self.graphs.clear()
        self.logits.clear()
        self.tokens.clear()

    def can_run(self, spec: BatchSpec) -> bool:
        bs = spec.batch_size
        return (spec.tree_mask is None and spec.logits_indices is None and bs <= self.max_batch
                and spec.qo_indptr[-1] == bs * self.q_len and spec.max_q_len == self.q_len)

    def run(self, spec: BatchSpec, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [rows, vocab] of ``spec``; ``input_ids``: optional device token ids replacing spec's."""
        return self._launch(spec, input_ids)[0]

    def launch_greedy(self, spec: BatchSpec, input_ids: torch.Tensor | None = None) -> PendingTokens:
        """Launch ``spec`` (greedy graphs only) and the copy of its argmax tokens to the host; no sync."""
        if not self.greedy:
            raise RuntimeError("ssdk: launch_greedy needs a GraphRunner built with greedy=True")
        tokens = self._launch(spec, input_ids)[1]
        host = self._tokens_host[self._slot][:tokens.shape[0]]
        self._slot ^= 1
        if not self.capture:
            return PendingTokens(tokens, host.copy_(tokens), None)
        host.copy_(tokens, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return PendingTokens(tokens, host, done)

    def _launch(self, spec: BatchSpec, input_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
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
            logits, tokens = self._forward(bucket)
        else:
            self.graphs[bucket].replay()
            logits, tokens = self.logits[bucket], self.tokens[bucket]
        return logits[:rows], None if tokens is None else tokens[:rows]
