"""``LLM``: the user-facing engine (load, schedule, run, sample, detokenize)."""

from __future__ import annotations

import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .block_manager import BlockManager
from .config import EngineConfig
from .loader import load_tokenizer
from .model_runner import ModelRunner
from .sampling import SamplingParams
from .scheduler import Scheduler
from .cuda_graphs import PendingTokens
from .sequence import Sequence, Status
from .speculate_sync import ChainSpeculator, draft_config, runner_config
from .workers import Workers, init_tp


@dataclass
class RequestOutput:
    """One finished request. ``metrics``: ttft_s, decode_tok_s, latency_s, num_prompt_tokens,
    num_output_tokens, num_preemptions. ``logprobs``: per output token {token id: log-probability} of the
    sampled token and the top ``SamplingParams.logprobs`` tokens (empty when not requested)."""

    index: int
    prompt: str | None
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str | None
    finish_reason: str
    metrics: dict = field(default_factory=dict)
    logprobs: list[dict[int, float]] = field(default_factory=list)


class LLM:
    """Generate with a Llama-3.x or Qwen-3 checkpoint on ssdk's kernels.

    Parameters
    ----------
    model : HF checkpoint folder (config.json, *.safetensors, tokenizer.json), or "synthetic:NAME"
        (random weights drawn in memory, see :mod:`ssdk.testing.synthetic`).
    draft : optional draft model (same forms, same vocabulary) for synchronous speculative decoding
        (:mod:`ssdk.engine.speculate_sync`); ``speculate_k`` tokens are drafted per round. Output equals
        the target's alone: token for token under greedy, in distribution when sampling.
    tensor_parallel_size, dtype, enforce_eager, **kwargs : see :class:`ssdk.engine.config.EngineConfig`.
    progress : show progress bars (loading, generation).
    """

    def __init__(self, model: str, *, draft: str | None = None, speculate_k: int = 4,
                 tensor_parallel_size: int = 1, dtype: torch.dtype | str | None = None,
                 enforce_eager: bool = False, progress: bool = True, **kwargs):
        self.config = EngineConfig(model=str(model), tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                                   enforce_eager=enforce_eager, **kwargs)
        self.progress = progress
        self.tokenizer = load_tokenizer(self.config.model)
        self.workers = Workers(self.config) if tensor_parallel_size > 1 else None
        tp = init_tp(self.config, 0, self.workers.port if self.workers else 0)
        self.speculator: ChainSpeculator | None = None
        lookahead = 0
        if draft is None:
            self.runner = ModelRunner(self.config, 0, tp, progress)
        else:
            if tensor_parallel_size > 1:
                raise ValueError("ssdk: speculative decoding (draft=...) supports tensor_parallel_size=1 only")
            if not isinstance(speculate_k, int) or isinstance(speculate_k, bool) or speculate_k < 1:
                raise ValueError(f"ssdk: speculate_k must be a positive int, got {speculate_k!r}")
            lookahead = speculate_k
            config = runner_config(self.config, speculate_k)
            draft_runner = ModelRunner(draft_config(config, draft), 0, None, progress)  # loaded first: its
            self.runner = ModelRunner(config, 0, tp, progress,  # weights count as used when sizing the KV cache
                                      extra_page_bytes=draft_runner.page_bytes())
            self.speculator = ChainSpeculator(self.runner, draft_runner, speculate_k, self.config.seed,
                                              self.config.enforce_eager)
        self.use_speculation = self.speculator is not None  # False: plain AR decode (set between generate calls)
        if self.workers:
            dist.barrier()
        mc = self.config.model_config
        self.block_manager = BlockManager(self.runner.num_kv_pages, self.config.page_size)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs=self.config.max_num_seqs,
                                   max_num_batched_tokens=self.config.max_num_batched_tokens,
                                   max_model_len=self.config.max_model_len, eos_token_ids=mc.eos_token_ids,
                                   lookahead=lookahead)
        self.stats: dict[str, float] = {**self.runner.timings, "num_kv_pages": self.runner.num_kv_pages,
                                        "kv_cache_gb": self.runner.kv_cache.numel() * self.runner.dtype.itemsize / 1e9}
        self._closed = False
        self._in_flight: tuple[list[Sequence], PendingTokens] | None = None  # launched greedy decode step
        self._reset_step_stats()

    def _reset_step_stats(self) -> None:
        self._step_stats = dict.fromkeys(("prefill_tokens", "prefill_s", "prefill_steps", "decode_tokens",
                                          "decode_s", "decode_steps"), 0.0)
        if self.speculator:
            self.speculator.reset_stats()

    # ------------------------------------------------------------------ requests

    def _tokenize(self, prompt: str | list[int]) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError(f"ssdk: {self.config.model} has no tokenizer.json; pass prompts as token ids")
            return prompt, self.tokenizer.encode(prompt)
        ids = list(prompt)
        vocab = self.config.model_config.vocab_size
        if not all(isinstance(t, int) and 0 <= t < vocab for t in ids):
            raise ValueError(f"ssdk: prompt token ids must be ints in [0, {vocab})")
        return None, ids

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None) -> Sequence:
        text, ids = self._tokenize(prompt)
        params = params or SamplingParams()
        if self.use_speculation and params.logprobs:
            raise ValueError("ssdk: logprobs are not supported with speculative decoding (draft=...)")
        seq = Sequence(ids, params, prompt=text)
        self.scheduler.add(seq)
        return seq

    def step(self) -> list[Sequence]:
        """Schedule and run one step; return the requests that finished in it.

        Greedy decoding through the CUDA graphs is pipelined: a step launches the decode step after the
        one in flight (its input tokens taken from the device) before it reads the tokens of the one in
        flight, so the host's scheduling and bookkeeping overlap the GPU's work (see _greedy_decode_step).
        """
        start = time.perf_counter()
        if self._in_flight is not None:
            return self._greedy_decode_step(start)
        seqs, prefill = self.scheduler.schedule()
        if not seqs:
            raise RuntimeError("ssdk: no request could be scheduled (the KV cache is too small for the next one)")
        if not prefill and self.use_speculation:
            return self._speculative_step(seqs, start)
        spec = self.runner.spec_for(seqs)
        if not prefill and self.workers is None and all(s.params.greedy and not s.params.logprobs for s in seqs):
            pending = self.runner.launch_greedy(spec)
            if pending is not None:
                self._in_flight = (seqs, pending)
                return self._greedy_decode_step(start)
        if self.workers:
            self.workers.call("execute", spec)
        logits = self.speculator.prefill(spec) if self.use_speculation and prefill else self.runner.execute(spec)
        done = [s.num_computed_tokens + s.num_scheduled_tokens == s.num_tokens for s in seqs]  # sample these
        complete = [s for s, d in zip(seqs, done) if d]
        tokens = iter(self.runner.sample(logits, complete) if complete else [])
        sampled = [next(tokens) if d else None for d in done]
        kind = "prefill" if prefill else "decode"
        self._step_stats[f"{kind}_tokens"] += len(spec.input_ids) if prefill else len(seqs)
        self._step_stats[f"{kind}_s"] += time.perf_counter() - start
        self._step_stats[f"{kind}_steps"] += 1
        return self.scheduler.postprocess(seqs, sampled)

    def _greedy_decode_step(self, start: float) -> list[Sequence]:
        """Launch the step after the greedy decode step in flight when the scheduler can commit to it
        (Scheduler.schedule_ahead), then read and account the in-flight step's tokens: one host sync per
        step, taken while the GPU already runs the next one. Rows of requests that the in-flight step
        finished are dropped when the step ahead is read."""
        seqs, pending = self._in_flight
        ahead = None
        if self.scheduler.schedule_ahead(seqs):
            ahead = self.runner.launch_greedy(self.runner.spec_ahead(seqs), pending.device)
        live = [(s, t) for s, t in zip(seqs, pending.wait()) if s.status is not Status.FINISHED]
        finished = self.scheduler.postprocess([s for s, _ in live], [t for _, t in live])
        self._in_flight = None
        if ahead is not None:
            for seq in seqs:
                seq.num_scheduled_tokens = int(seq.status is not Status.FINISHED)
            self._in_flight = (seqs, ahead)
        self._step_stats["decode_tokens"] += len(live)
        self._step_stats["decode_s"] += time.perf_counter() - start
        self._step_stats["decode_steps"] += 1
        return finished

    def _speculative_step(self, seqs: list[Sequence], start: float) -> list[Sequence]:
        """One draft + verify round; rejected pages are freed (both caches share the block tables)."""
        before = [s.num_tokens for s in seqs]
        finished = self.scheduler.postprocess(seqs, self.speculator.round(seqs))
        for seq in seqs:
            if seq.block_table:
                self.block_manager.truncate(seq, seq.num_tokens)
        self._step_stats["decode_tokens"] += sum(s.num_tokens - n for s, n in zip(seqs, before))
        self._step_stats["decode_s"] += time.perf_counter() - start
        self._step_stats["decode_steps"] += 1
        return finished

    def generate(self, prompts: str | list[int] | Seq[str] | Seq[list[int]],
                 sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
                 use_tqdm: bool | None = None) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids); outputs come back in prompt order."""
        from tqdm import tqdm

        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = sampling_params or SamplingParams()
        params = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"ssdk: got {len(params)} sampling params for {len(prompts)} prompts")
        self._reset_step_stats()
        if self.runner.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.runner.device)
        order = {self.add_request(p, sp).seq_id: i for i, (p, sp) in enumerate(zip(prompts, params))}
        outputs: list[RequestOutput | None] = [None] * len(prompts)
        bar = tqdm(total=len(prompts), desc="Generating", unit="req",
                   disable=not (self.progress if use_tqdm is None else use_tqdm))
        start = time.perf_counter()
        while self.scheduler.has_unfinished() or self._in_flight is not None:
            for seq in self.step():
                outputs[order[seq.seq_id]] = self._output(order[seq.seq_id], seq)
                bar.update(1)
            s = self._step_stats
            if s["decode_s"]:
                bar.set_postfix_str(f"decode {s['decode_tokens'] / s['decode_s']:.0f} tok/s", refresh=False)
        bar.close()
        self.last_stats = {**self._step_stats, "wall_s": time.perf_counter() - start,
                           "num_preemptions": sum(o.metrics["num_preemptions"] for o in outputs)}
        if self.use_speculation:
            self.last_stats["spec"] = {**self.speculator.stats, "k": self.speculator.k}
        if self.runner.device.type == "cuda":
            self.last_stats["peak_memory_gb"] = torch.cuda.max_memory_allocated(self.runner.device) / 1e9
        return outputs

    def _output(self, index: int, seq: Sequence) -> RequestOutput:
        m = seq.metrics
        metrics = {"ttft_s": m.ttft_s, "decode_tok_s": m.decode_tok_s(seq.num_output_tokens),
                   "latency_s": m.finished - m.arrival, "num_prompt_tokens": seq.num_prompt_tokens,
                   "num_output_tokens": seq.num_output_tokens, "num_preemptions": m.num_preemptions}
        text = self.tokenizer.decode(seq.output_token_ids) if self.tokenizer else None
        return RequestOutput(index, seq.prompt, seq.token_ids[:seq.num_prompt_tokens], seq.output_token_ids, text,
                             seq.finish_reason, metrics, seq.logprobs)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.workers:
            self.runner.release_graphs()  # before NCCL's teardown, which waits for graphs holding its collectives
            self.workers.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "workers", None) is not None:
            self.close()
