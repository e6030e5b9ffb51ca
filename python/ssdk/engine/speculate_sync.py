"""Synchronous speculative decoding (chain): a draft model proposes K tokens, the target verifies them.

One round for a batch of decoding sequences, each holding T tokens with the target's K/V of the first
T - 1 (the engine's decode invariant):

1. Draft, K forwards. Step 0 feeds the last two tokens (positions T-2, T-1; rewriting the K/V of T-2
   is harmless and covers the round after a full acceptance, when the draft never saw its own last
   draft), steps 1..K-1 feed the previous draft token. Draft tokens stay on the device.
2. Target, one forward of K+1 tokens per sequence (the last token + K drafts), then the fused
   ``ssdk.ops.verify_chain`` (greedy, or speculative sampling from both models' logits under the
   request's temperature / top-k / top-p). Its outputs are read once: the round's only host sync.
3. The accepted tokens and the bonus/recovery token are appended one at a time (EOS, stop tokens and
   max_tokens inside the accepted run end the request exactly there); the pages past the new length
   are freed in both caches (they share block tables); stale K/V inside kept pages are overwritten by
   later rounds. Afterwards the target holds the K/V of T_new - 1 tokens again.

CUDA graphs: the draft replays its q_len=1 and q_len=2 graphs, the target its q_len=K+1 graph (one
per batch bucket, see :mod:`ssdk.engine.cuda_graphs`); sampling and verification run eagerly between
replays. Random draws: Philox(seed, offset) with offsets from 2**40 up (the AR sampler's are below);
seeded requests draw from their own seed at offsets derived from their output length, so their
tokens do not depend on the batch.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from .. import ops
from .config import EngineConfig
from .model_runner import BatchSpec, ModelRunner
from .sequence import Sequence

OFFSET_BASE = 1 << 40


def draft_config(target: EngineConfig, draft: str) -> EngineConfig:
    """The draft runner's config: the target's shapes and dtype, eager until its KV cache is sized."""
    cfg = EngineConfig(model=str(draft), dtype=target.dtype, device=target.device, enforce_eager=True,
                       max_num_seqs=target.max_num_seqs, max_num_batched_tokens=target.max_num_batched_tokens,
                       max_model_len=target.max_model_len, page_size=target.page_size, num_kv_pages=1,
                       seed=target.seed, batch_invariant=target.batch_invariant)
    tm, dm = target.model_config, cfg.model_config
    if dm.vocab_size != tm.vocab_size:
        raise ValueError(f"ssdk: draft {draft!r} has vocab_size {dm.vocab_size}, the target {tm.vocab_size}; "
                         "draft and target must share the tokenizer")
    if cfg.max_model_len != target.max_model_len:
        raise ValueError(f"ssdk: draft {draft!r} supports {dm.max_position_embeddings} positions, fewer than "
                         f"max_model_len + speculate_k = {target.max_model_len}")
    return cfg


def runner_config(config: EngineConfig, k: int) -> EngineConfig:
    """The runners hold K more positions than requests may reach: a round drafts past the last token."""
    return replace(config, max_model_len=config.max_model_len + k)


class ChainSpeculator:
    """Drafts and verifies chains of ``k`` tokens for ``target`` with ``draft`` (same block tables).

    Sizes the draft's KV cache to the target's page count and captures the round's CUDA graphs.
    ``stats``: rounds, seq_rounds, accept_hist (seq-rounds per accepted length 0..k), draft_s, verify_s.
    """

    def __init__(self, target: ModelRunner, draft: ModelRunner, k: int, seed: int, enforce_eager: bool):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"ssdk: speculate_k must be a positive int, got {k!r}")
        self.target, self.draft, self.k, self.seed = target, draft, k, seed
        draft.resize_kv_cache(target.num_kv_pages)
        draft.config.enforce_eager = enforce_eager
        target.capture_graphs(k + 1)
        draft.capture_graphs(1)
        draft.capture_graphs(2)
        self.device = target.device
        self.vocab = target.config.model_config.vocab_size
        self._zeros: dict[int, torch.Tensor] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = {"rounds": 0, "seq_rounds": 0, "accept_hist": [0] * (self.k + 1), "draft_s": 0.0,
                      "verify_s": 0.0}

    def prefill(self, spec: BatchSpec) -> torch.Tensor:
        """A prefill step fills both caches; returns the target's logits."""
        self.draft.execute(spec)
        return self.target.execute(spec)

    # ------------------------------------------------------------------ one round

    def _spec(self, seqs: list[Sequence], first: list[int], q_len: int) -> BatchSpec:
        """Every sequence computes ``q_len`` tokens at positions first[b] .. first[b] + q_len - 1."""
        page = self.target.page_size
        positions = [p for f in first for p in range(f, f + q_len)]
        tables = [s.block_table for s in seqs]
        slots = [tables[i // q_len][p // page] * page + p % page for i, p in enumerate(positions)]
        rows = len(positions)
        return BatchSpec(input_ids=[0] * rows, positions=positions, qo_indptr=list(range(0, rows + 1, q_len)),
                         prefix_lens=list(first), block_tables=tables, slot_mapping=slots)

    def _sampling(self, seqs: list[Sequence]) -> tuple[torch.Tensor | None, ...]:
        """Device (temperature, top_k, top_p) of the batch; temperature None when all are greedy."""
        params = [s.params for s in seqs]
        if all(p.greedy for p in params):
            return None, None, None
        put = self.target._tensor
        temperature = put([float(p.temperature) for p in params], torch.float32)
        top_k = put([p.top_k for p in params], torch.int32) if any(p.top_k > 0 for p in params) else None
        top_p = put([float(p.top_p) for p in params], torch.float32) if any(p.top_p < 1 for p in params) else None
        return temperature, top_k, top_p

    def _offsets(self, seqs: list[Sequence]) -> tuple[int, list[tuple[int, int, int]]]:
        """Philox offset base of the batch's draws and (row, seed, base) of each seeded sampling request;
        a round uses offsets base .. base + k."""
        batch = OFFSET_BASE + self.stats["rounds"] * (self.k + 1)
        seeded = [(i, s.params.seed, OFFSET_BASE + s.num_output_tokens * (self.k + 1))
                  for i, s in enumerate(seqs) if s.params.seed is not None and not s.params.greedy]
        return batch, seeded

    def _draft_sample(self, logits: torch.Tensor, sampling, offsets, j: int, out: torch.Tensor) -> None:
        temperature, top_k, top_p = sampling
        if temperature is None:
            rows = logits.shape[0]
            if rows not in self._zeros:
                self._zeros[rows] = torch.zeros(rows, dtype=torch.float32, device=self.device)
            ops.sample_tokens(logits, self._zeros[rows], out=out)
            return
        base, seeded = offsets
        ops.sample_tokens(logits, temperature, top_k, top_p, seed=self.seed, offset=base + j, out=out)
        for i, seed, own in seeded:
            r = slice(i, i + 1)
            ops.sample_tokens(logits[r], temperature[r], top_k if top_k is None else top_k[r],
                              top_p if top_p is None else top_p[r], seed=seed, offset=own + j, out=out[r])

    def _verify(self, logits, drafts, draft_logits, sampling, offsets) -> tuple[torch.Tensor, torch.Tensor]:
        temperature, top_k, top_p = sampling
        if temperature is None:
            return ops.verify_chain(logits, drafts)
        base, seeded = offsets
        out, accept = ops.verify_chain(logits, drafts, temperature, draft_logits=draft_logits, top_k=top_k,
                                       top_p=top_p, seed=self.seed, offset=base + self.k)
        for i, seed, own in seeded:
            r = slice(i, i + 1)
            ops.verify_chain(logits[r], drafts[r], temperature[r], draft_logits=draft_logits[r],
                             top_k=top_k if top_k is None else top_k[r], top_p=top_p if top_p is None else top_p[r],
                             seed=seed, offset=own + self.k, out_tokens=out[r], accept_len=accept[r])
        return out, accept

    def _mark(self) -> torch.cuda.Event | float:
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _seconds(self, start, end) -> float:
        return start.elapsed_time(end) / 1e3 if self.device.type == "cuda" else end - start

    @torch.inference_mode()
    def round(self, seqs: list[Sequence]) -> list[list[int]]:
        """Run one round; returns each sequence's accepted draft tokens + the new token (not yet appended).
        Sets ``num_scheduled_tokens`` to the tokens whose target K/V the round computed validly."""
        k, batch = self.k, len(seqs)
        lens = [s.num_tokens for s in seqs]
        sampling = self._sampling(seqs)
        offsets = self._offsets(seqs) if sampling[0] is not None else None
        t0 = self._mark()
        drafts = torch.empty(k, batch, dtype=torch.int64, device=self.device)
        draft_logits = None
        step0 = self._spec(seqs, [n - 2 for n in lens], 2)
        step0.input_ids = [t for s in seqs for t in s.token_ids[-2:]]
        logits = self.draft.execute(step0)[1::2]
        for j in range(k):
            if j:
                logits = self.draft.execute(self._spec(seqs, [n - 1 + j for n in lens], 1), drafts[j - 1])
            if sampling[0] is not None:
                if draft_logits is None:
                    draft_logits = torch.empty(batch, k, logits.shape[-1], dtype=logits.dtype, device=self.device)
                draft_logits[:, j] = logits
            self._draft_sample(logits, sampling, offsets, j, drafts[j])
        t1 = self._mark()
        ids = torch.empty(batch, k + 1, dtype=torch.int64, device=self.device)
        ids[:, 0] = self.target._tensor([s.last_token for s in seqs], torch.int64)
        ids[:, 1:] = drafts.t()
        target_logits = self.target.execute(self._spec(seqs, [n - 1 for n in lens], k + 1), ids)
        out, accept = self._verify(target_logits.view(batch, k + 1, -1), drafts.t().contiguous(), draft_logits,
                                   sampling, offsets)
        t2 = self._mark()  # recorded before the sync below, so the event is complete when read
        host = torch.cat([accept[:, None], out], dim=1).tolist()  # the round's one host sync
        st = self.stats
        st["rounds"] += 1
        st["seq_rounds"] += batch
        st["draft_s"] += self._seconds(t0, t1)
        st["verify_s"] += self._seconds(t1, t2)
        tokens = []
        for seq, (n, *row) in zip(seqs, host):
            st["accept_hist"][n] += 1
            seq.num_scheduled_tokens = n + 1  # the last token + n accepted drafts now have valid K/V
            tokens.append(row[:n + 1])
        return tokens
