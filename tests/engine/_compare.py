"""Comparing greedy generations where bit-exactness cannot be expected (TP all-reduce order, GPU GEMM
algorithms): the outputs must agree token for token until a step where the reference itself had a
near-tie, and the token taken there must score within ``tol`` of the reference's best (vLLM's
check_logprobs_close). ``tol`` is in logits: bf16 logits of magnitude 4-8 have an ulp of 1/32, so the
default 0.1 allows ~3 ulps; callers whose logits are larger (or that add bf16 roundings, like TP) pass more."""

from __future__ import annotations

import torch


def _score(scores: dict[int, float] | torch.Tensor, token: int) -> float:
    if isinstance(scores, dict):
        return scores.get(token, float("-inf"))
    return float(scores[token])


def _best(scores: dict[int, float] | torch.Tensor) -> float:
    return max(scores.values()) if isinstance(scores, dict) else float(scores.max())


def assert_greedy_close(ours: list[int], ref: list[int], ref_scores, what: str, tol: float = 0.1) -> int:
    """Return the number of leading tokens that agree (len(ref) when identical).

    ref_scores[i]: the reference's logits [V] (or {token: logprob} with its top tokens) at step i.
    """
    assert len(ours) == len(ref), f"{what}: {len(ours)} tokens vs {len(ref)}"
    for i, (a, b) in enumerate(zip(ours, ref)):
        if a != b:
            best, mine = _best(ref_scores[i]), _score(ref_scores[i], a)
            assert best - mine <= tol, (f"{what}: step {i}: token {a} scores {mine:.4f} in the reference, whose "
                                        f"choice {b} scores {best:.4f} (not a near-tie); ours {ours}, ref {ref}")
            return i
    return len(ref)
