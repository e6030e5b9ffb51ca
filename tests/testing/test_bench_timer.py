"""The benchmark timer's interleaving (ssdk.testing.bench.time_interleaved), with fake samplers on the CPU."""

from __future__ import annotations

from collections import Counter

import pytest

from ssdk.testing.bench import PreparedOp, balanced_orders, time_interleaved

pytestmark = pytest.mark.cpu


def _recording(name: str, log: list[str], times: list[float]) -> PreparedOp:
    it = iter(times)

    def sample() -> float:
        log.append(name)
        return next(it)
    return PreparedOp(sample, "graph")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_balanced_orders_balance_positions_and_predecessors(n):
    rows = balanced_orders(n)
    assert len(rows) == (n if n % 2 == 0 else 2 * n)
    assert all(sorted(row) == list(range(n)) for row in rows)
    positions = Counter((op, p) for row in rows for p, op in enumerate(row))
    assert len(positions) == n * n and len(set(positions.values())) == 1
    followers = Counter((row[k], row[k + 1]) for row in rows for k in range(n - 1))
    assert len(followers) == n * (n - 1) and len(set(followers.values())) <= 1


def test_every_op_runs_in_every_position_and_after_every_other_op():
    log: list[str] = []
    names = ["a", "b", "c"]
    ops = [_recording(n, log, [1.0] * 6) for n in names]
    time_interleaved(ops, replays=6)
    rounds = [log[i:i + 3] for i in range(0, len(log), 3)]
    assert rounds == [[names[i] for i in row] for row in balanced_orders(3)]
    for position in range(3):
        assert sorted(r[position] for r in rounds) == ["a", "a", "b", "b", "c", "c"]
    pairs = Counter((r[k], r[k + 1]) for r in rounds for k in range(2))
    assert sorted(pairs) == sorted((x, y) for x in names for y in names if x != y)


def test_no_ops_time_nothing():
    assert time_interleaved([], replays=5) == []


def test_medians_belong_to_their_own_op():
    log: list[str] = []
    ops = [_recording("fast", log, [1.0, 9.0, 1.0, 1.0, 2.0]), _recording("slow", log, [5.0, 5.0, 6.0, 4.0, 5.0])]
    fast, slow = time_interleaved(ops, replays=5)
    assert (fast.us, slow.us) == (1.0, 5.0)
    assert fast.samples == [1.0, 9.0, 1.0, 1.0, 2.0] and fast.method == "graph"
