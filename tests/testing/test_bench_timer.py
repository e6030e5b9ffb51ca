"""The benchmark timer's interleaving (ssdk.testing.bench.time_interleaved), with fake samplers on the CPU."""

from __future__ import annotations

import pytest

from ssdk.testing.bench import PreparedOp, time_interleaved

pytestmark = pytest.mark.cpu


def _recording(name: str, log: list[str], times: list[float]) -> PreparedOp:
    it = iter(times)

    def sample() -> float:
        log.append(name)
        return next(it)
    return PreparedOp(sample, "graph")


def test_every_op_runs_in_every_position_equally_often():
    log: list[str] = []
    names = ["a", "b", "c"]
    ops = [_recording(n, log, [1.0] * 6) for n in names]
    time_interleaved(ops, replays=6)
    rounds = [log[i:i + 3] for i in range(0, len(log), 3)]
    assert rounds[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for position in range(3):
        assert sorted(r[position] for r in rounds) == ["a", "a", "b", "b", "c", "c"]


def test_medians_belong_to_their_own_op():
    log: list[str] = []
    ops = [_recording("fast", log, [1.0, 9.0, 1.0, 1.0, 2.0]), _recording("slow", log, [5.0, 5.0, 6.0, 4.0, 5.0])]
    fast, slow = time_interleaved(ops, replays=5)
    assert (fast.us, slow.us) == (1.0, 5.0)
    assert fast.samples == [1.0, 9.0, 1.0, 1.0, 2.0] and fast.method == "graph"
