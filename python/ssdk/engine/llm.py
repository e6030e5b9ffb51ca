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
from .sequence import Sequence
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
    tensor_parallel_size, dtype, enforce_eager, **kwargs : see :class:`ssdk.engine.config.EngineConfig`.
    progress : show progress bars (loading, generation).
    """

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, dtype: torch.dtype | str | None = None,
                 enforce_eager: bool = False, progress: bool = True, **kwargs):
        self.config = EngineConfig(model=str(model), tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                                   enforce_eager=enforce_eager, **kwargs)
        self.progress = progress
        self.tokenizer = load_tokenizer(self.config.model)
        self.workers = Workers(self.config) if tensor_parallel_size > 1 else None
        tp = init_tp(self.config, 0, self.workers.port if self.workers else 0)
        self.runner = ModelRunner(self.config, 0, tp, progress)
        if self.workers:
            dist.barrier()
        mc = self.config.model_config
        self.block_manager = BlockManager(self.runner.num_kv_pages, self.config.page_size)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs=self.config.max_num_seqs,
                                   max_num_batched_tokens=self.config.max_num_batched_tokens,
                                   max_model_len=self.config.max_model_len, eos_token_ids=mc.eos_token_ids)
        self.stats: dict[str, float] = {**self.runner.timings, "num_kv_pages": self.runner.num_kv_pages,
                                        "kv_cache_gb": self.runner.kv_cache.numel() * self.runner.dtype.itemsize / 1e9}
        self._closed = False
        self._reset_step_stats()

    def _reset_step_stats(self) -> None:
        self._step_stats = dict.fromkeys(("prefill_tokens", "prefill_s", "prefill_steps", "decode_tokens",
                                          "decode_s", "decode_steps"), 0.0)

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
        seq = Sequence(ids, params or SamplingParams(), prompt=text)
        self.scheduler.add(seq)
        return seq

    def step(self) -> list[Sequence]:
        """Schedule and run one step; return the requests that finished in it."""
        start = time.perf_counter()
        seqs, prefill = self.scheduler.schedule()
        if not seqs:
            raise RuntimeError("ssdk: no request could be scheduled (the KV cache is too small for the next one)")
        spec = self.runner.spec_for(seqs)
        if self.workers:
            self.workers.call("execute", spec)
        logits = self.runner.execute(spec)
        done = [s.num_computed_tokens + s.num_scheduled_tokens == s.num_tokens for s in seqs]  # sample these
        complete = [s for s, d in zip(seqs, done) if d]
        tokens = iter(self.runner.sample(logits, complete) if complete else [])
        sampled = [next(tokens) if d else None for d in done]
        kind = "prefill" if prefill else "decode"
        self._step_stats[f"{kind}_tokens"] += len(spec.input_ids) if prefill else len(seqs)
        self._step_stats[f"{kind}_s"] += time.perf_counter() - start
        self._step_stats[f"{kind}_steps"] += 1
        return self.scheduler.postprocess(seqs, sampled)

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
        while self.scheduler.has_unfinished():
            for seq in self.step():
                outputs[order[seq.seq_id]] = self._output(order[seq.seq_id], seq)
                bar.update(1)
            s = self._step_stats
            if s["decode_s"]:
                bar.set_postfix_str(f"decode {s['decode_tokens'] / s['decode_s']:.0f} tok/s", refresh=False)
        bar.close()
        self.last_stats = {**self._step_stats, "wall_s": time.perf_counter() - start,
                           "num_preemptions": sum(o.metrics["num_preemptions"] for o in outputs)}
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
            self.workers.close()
            dist.destroy_process_group()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "workers", None) is not None:
            self.close()
