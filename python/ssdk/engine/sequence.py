"""One request's tokens, KV pages and timing."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass

from .sampling import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"    # not (fully) prefilled; may hold pages when a chunked prefill is under way
    RUNNING = "running"    # decoding
    FINISHED = "finished"


@dataclass
class RequestMetrics:
    """Wall-clock timestamps (time.perf_counter seconds) and counters of one request."""

    arrival: float
    first_scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None
    num_preemptions: int = 0

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    def decode_tok_s(self, num_output_tokens: int) -> float | None:
        """Output tokens after the first, per second after the first token."""
        if self.finished is None or self.first_token is None or num_output_tokens < 2:
            return None
        elapsed = self.finished - self.first_token
        return (num_output_tokens - 1) / elapsed if elapsed > 0 else None


class Sequence:
    """Prompt + generated tokens. ``num_computed_tokens`` tokens have their K/V in the paged cache;
    a step computes ``num_scheduled_tokens`` more; the token after the last computed one is sampled
    once every token is computed."""

    _ids = itertools.count()

    def __init__(self, prompt_token_ids: list[int], params: SamplingParams, prompt: str | None = None):
        if not prompt_token_ids:
            raise ValueError("ssdk: a prompt must have at least one token")
        self.seq_id = next(Sequence._ids)
        self.prompt = prompt
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.status = Status.WAITING
        self.block_table: list[int] = []
        self.num_computed_tokens = 0
        self.num_scheduled_tokens = 0
        self.finish_reason: str | None = None
        self.logprobs: list[dict[int, float]] = []  # per output token, when params.logprobs > 0
        self.metrics = RequestMetrics(arrival=time.perf_counter())

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def last_token(self) -> int:
        return self.token_ids[-1]

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    def truncate(self, num_tokens: int) -> None:
        """Drop tokens past ``num_tokens`` (speculative rollback); their K/V become stale."""
        if not self.num_prompt_tokens <= num_tokens <= self.num_tokens:
            raise ValueError(f"ssdk: cannot truncate sequence {self.seq_id} of {self.num_tokens} tokens "
                             f"({self.num_prompt_tokens} prompt) to {num_tokens}")
        del self.token_ids[num_tokens:]
        self.num_computed_tokens = min(self.num_computed_tokens, num_tokens)

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, status={self.status.value}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, pages={len(self.block_table)})")
