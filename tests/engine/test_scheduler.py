"""Block manager and scheduler on their own (no model): page accounting, chunked prefill, preemption,
stop conditions."""

from __future__ import annotations

import pytest

from ssdk.engine.block_manager import BlockManager
from ssdk.engine.sampling import SamplingParams
from ssdk.engine.scheduler import Scheduler
from ssdk.engine.sequence import Sequence, Status

pytestmark = pytest.mark.cpu


def make(num_pages=8, page_size=4, max_num_seqs=4, max_tokens_step=64, max_model_len=64, eos=(2,)):
    bm = BlockManager(num_pages, page_size)
    return bm, Scheduler(bm, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_tokens_step,
                         max_model_len=max_model_len, eos_token_ids=eos)


def run_step(sched: Scheduler, token: int = 7) -> tuple[list[Sequence], bool, list[Sequence]]:
    """Schedule a step and pretend the model sampled ``token`` for every completed sequence."""
    seqs, prefill = sched.schedule()
    sampled = [token if s.num_computed_tokens + s.num_scheduled_tokens == s.num_tokens else None for s in seqs]
    return seqs, prefill, sched.postprocess(seqs, sampled)


def test_block_manager_accounting():
    bm = BlockManager(num_pages=5, page_size=4)
    seq = Sequence([1] * 6, SamplingParams())
    assert bm.missing_pages(seq, 6) == 2 and bm.can_reserve(seq, 20) and not bm.can_reserve(seq, 21)
    bm.reserve(seq, 6)
    assert len(seq.block_table) == 2 and bm.num_free_pages == 3
    bm.reserve(seq, 8)  # still fits in 2 pages
    assert len(seq.block_table) == 2
    bm.reserve(seq, 13)
    assert len(seq.block_table) == 4 and bm.num_free_pages == 1
    assert bm.slot(seq, 9) == seq.block_table[2] * 4 + 1
    bm.truncate(seq, 5)  # rollback: keep 2 pages
    assert len(seq.block_table) == 2 and bm.num_free_pages == 3
    with pytest.raises(RuntimeError, match="out of KV pages"):
        bm.reserve(seq, 21)
    bm.free(seq)
    assert bm.num_free_pages == 5 and seq.block_table == []


def test_chunked_prefill_then_decode():
    bm, sched = make(num_pages=16, max_tokens_step=8)
    a, b = Sequence(list(range(10, 22)), SamplingParams(max_tokens=3)), Sequence([5, 6, 7], SamplingParams())
    sched.add(a)
    sched.add(b)
    seqs, prefill, _ = run_step(sched)
    assert prefill and seqs == [a] and a.num_computed_tokens == 8 and a.num_tokens == 12  # partial chunk
    seqs, prefill, _ = run_step(sched)
    assert prefill and seqs == [a, b] and a.num_tokens == 13 and b.num_tokens == 4  # rest of a, all of b
    seqs, prefill, _ = run_step(sched)
    assert not prefill and seqs == [a, b] and [s.num_tokens for s in seqs] == [14, 5]
    _, _, finished = run_step(sched)
    assert finished == [a] and a.finish_reason == "length" and a.output_token_ids == [7, 7, 7]
    assert a.status is Status.FINISHED and a.block_table == [] and list(sched.running) == [b]


def test_preemption_recomputes_without_losing_requests():
    bm, sched = make(num_pages=4, page_size=4, max_model_len=64)
    a = Sequence([1] * 7, SamplingParams(max_tokens=6, ignore_eos=True))
    b = Sequence([1] * 7, SamplingParams(max_tokens=6, ignore_eos=True))
    sched.add(a)
    sched.add(b)
    run_step(sched)  # both prefilled: 2 pages each, all 4 used
    assert bm.num_free_pages == 0 and a.num_tokens == b.num_tokens == 8
    seqs, _, _ = run_step(sched)  # position 7 still fits in 2 pages
    assert seqs == [a, b] and a.num_tokens == 9
    seqs, prefill, _ = run_step(sched)  # a needs a 3rd page for position 8: b is preempted
    assert not prefill and seqs == [a] and b.status is Status.WAITING and b.block_table == []
    assert sched.num_preemptions == 1 and b.metrics.num_preemptions == 1 and b.num_computed_tokens == 0
    finished = []
    for _ in range(20):
        if not sched.has_unfinished():
            break
        finished += run_step(sched)[2]
    assert {s.seq_id for s in finished} == {a.seq_id, b.seq_id}
    assert a.num_output_tokens == b.num_output_tokens == 6 and bm.num_free_pages == 4


def test_stop_conditions():
    _, sched = make(eos=(2,), max_model_len=10)
    eos = Sequence([1, 1], SamplingParams())
    ignore = Sequence([1, 1], SamplingParams(ignore_eos=True, max_tokens=3))
    stop = Sequence([1, 1], SamplingParams(stop_token_ids=(9,)))
    longest = Sequence([1] * 8, SamplingParams(ignore_eos=True))
    for s in (eos, ignore, stop, longest):
        sched.add(s)
    seqs, _, _ = sched.schedule(), None, None
    seqs = seqs[0]
    finished = sched.postprocess(seqs, [2, 2, 9, 3])
    assert [s.finish_reason for s in finished] == ["stop", "stop"] and finished == [eos, stop]
    finished = run_step(sched, token=2)[2]
    assert finished == [longest] and longest.finish_reason == "length" and longest.num_tokens == 10
    finished = run_step(sched, token=2)[2]
    assert finished == [ignore] and ignore.output_token_ids == [2, 2, 2] and ignore.finish_reason == "length"


def test_add_rejects_requests_that_cannot_fit():
    _, sched = make(num_pages=2, page_size=4, max_model_len=16)
    with pytest.raises(ValueError, match="leaves no room to generate"):
        sched.add(Sequence([1] * 16, SamplingParams()))
    with pytest.raises(ValueError, match="needs 3 KV pages but the cache has 2"):
        sched.add(Sequence([1] * 6, SamplingParams(max_tokens=4)))
    with pytest.raises(ValueError, match="at least one token"):
        Sequence([], SamplingParams())


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": -1}, "temperature"), ({"top_k": -2}, "top_k"), ({"top_p": 0.0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"), ({"seed": -1}, "seed"), ({"logprobs": -1}, "logprobs")])
def test_sampling_params_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)
