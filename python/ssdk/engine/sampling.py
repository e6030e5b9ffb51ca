"""Sampling parameters and the batched sampler (``ssdk.ops.sample_tokens``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples and stops.

    temperature : 0 = greedy (argmax); > 0 samples from softmax(logits / temperature).
    top_k : keep the k most likely tokens (0 or -1 = all).
    top_p : keep the smallest set of tokens with cumulative probability >= top_p (1.0 = all).
    max_tokens : output tokens at most.
    ignore_eos : keep generating past the model's EOS tokens (benchmarks).
    stop_token_ids : extra token ids that end the request (the token is kept in the output).
    seed : per-request seed: the request's tokens then do not depend on what it is batched with.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_tokens: int = 64
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    logprobs: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"ssdk: temperature must be >= 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            raise ValueError(f"ssdk: top_k must be an int >= -1 (0 or -1 = off), got {self.top_k!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"ssdk: top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"ssdk: max_tokens must be a positive int, got {self.max_tokens!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"ssdk: seed must be a non-negative int or None, got {self.seed!r}")
        if not isinstance(self.logprobs, int) or self.logprobs < 0:
            raise ValueError(f"ssdk: logprobs must be a non-negative int, got {self.logprobs!r}")
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
