"""The one benchmark timer every ssdk benchmark uses.

``time_op`` replays a CUDA graph that holds nothing but ``calls`` invocations of the op and reports
the median time of one invocation in µs; ``prepare_op`` + ``time_interleaved`` time several ops (the
providers of one benchmark shape) interleaved, in balanced orders. With ``cold_l2=True`` the graph cycles
through enough independent copies of the inputs (> 2x the L2 size, at least 50 MB) that every call reads
from HBM.
Falls back to event-timed eager launches (reported) when an op cannot be captured.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

COLD_BYTES = 128 << 20  # rotate inputs across > 2x the L2 of an H100/H200 (50/60 MB)


@dataclass
class Timing:
    us: float           # median µs per call
    method: str         # "graph" or "eager"
    samples: list[float] = field(default_factory=list)


@dataclass
class PreparedOp:
    """An op ready to time: ``sample()`` runs one timed replay (``calls`` invocations) and returns µs per call."""

    sample: Callable[[], float]
    method: str         # "graph" or "eager"


def _timed(run: Callable[[], None], calls: int) -> Callable[[], float]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def sample() -> float:
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e3 / calls
    return sample


def _prepare_graph(run_calls: Callable[[], None], calls: int) -> PreparedOp:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm up on the capture stream (lazy init, autotuning, JIT)
            run_calls()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run_calls()
    graph.replay()
    torch.cuda.synchronize()
    return PreparedOp(_timed(graph.replay, calls), "graph")


def _prepare_eager(run_calls: Callable[[], None], calls: int) -> PreparedOp:
    for _ in range(2):
        run_calls()
    torch.cuda.synchronize()
    return PreparedOp(_timed(run_calls, calls), "eager")


def prepare_op(fn: Callable[..., object], make_args: Callable[[], Sequence[object]], *, bytes_per_call: int = 0,
               cold_l2: bool = False, calls: int = 20, graph: bool = True) -> PreparedOp:
    """Warm ``fn`` up and capture ``calls`` invocations of it in a CUDA graph (see :func:`time_op`)."""
    copies = 1
    if cold_l2 and bytes_per_call > 0:
        copies = max(1, min(256, -(-COLD_BYTES // bytes_per_call)))
    arg_sets = [tuple(make_args()) for _ in range(copies)]
    calls = max(calls, copies) if cold_l2 else calls

    def run_calls() -> None:
        for i in range(calls):
            fn(*arg_sets[i % copies])

    if graph:
        try:
            return _prepare_graph(run_calls, calls)
        except Exception:  # not capturable (host sync, allocation in an eager library): time eagerly
            torch.cuda.synchronize()
    return _prepare_eager(run_calls, calls)


def time_op(fn: Callable[..., object], make_args: Callable[[], Sequence[object]], *, bytes_per_call: int = 0,
            cold_l2: bool = False, calls: int = 20, replays: int = 25, graph: bool = True) -> Timing:
    """Median µs of one ``fn(*args)``.

    Parameters
    ----------
    fn : the op; called as fn(*args) and nothing else is inside the timed region.
    make_args : returns a fresh, random (never all-zero) argument tuple on the GPU.
    bytes_per_call : bytes one call moves; sizes the input rotation for cold_l2.
    cold_l2 : rotate through independent argument copies totalling > COLD_BYTES.
    calls : invocations per graph replay (amortizes the replay launch).
    replays : timed replays; the median of their per-call times is reported.
    graph : capture into a CUDA graph (falls back to eager launches if capture fails).
    """
    return time_interleaved([prepare_op(fn, make_args, bytes_per_call=bytes_per_call, cold_l2=cold_l2,
                                        calls=calls, graph=graph)], replays)[0]


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of ``n`` ops in which every op takes every position equally often and follows every other
    op equally often (a Williams Latin square: n rows for even n, 2n for odd n).

    A plain rotation (0 1 2, 1 2 0, 2 0 1) balances positions but keeps each op's predecessor fixed.
    """
    first, lo, hi = [0], 1, n - 1
    while lo <= hi:
        first.append(lo)
        if lo != hi:
            first.append(hi)
        lo, hi = lo + 1, hi - 1
    rows = [[(k + r) % n for k in first] for r in range(n)]
    return rows if n % 2 == 0 else rows + [row[::-1] for row in rows]


def time_interleaved(ops: Sequence[PreparedOp], replays: int) -> list[Timing]:
    """Time several prepared ops against each other: ``replays`` rounds, each replaying every op once, the
    rounds cycling through :func:`balanced_orders`, so every op is timed equally often in every position and
    after every other op, and none owes its time to what ran just before it (clocks, L2 and DRAM state
    left by a heavier op)."""
    if not ops:
        return []
    samples: list[list[float]] = [[] for _ in ops]
    orders = balanced_orders(len(ops))
    for r in range(replays):
        for i in orders[r % len(orders)]:
            samples[i].append(ops[i].sample())
    return [Timing(statistics.median(s), op.method, s) for op, s in zip(ops, samples)]


def copy_bandwidth_gbps(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second, GB/s), measured now.

    Timed with eager launches: the same memcpy captured in a CUDA graph measured only 2.4 TB/s on an
    H100 (while kernels there moved 2.9 TB/s), so it would understate the peak.
    """
    src = torch.empty(nbytes // 4, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)
    timing = time_op(lambda a, b: b.copy_(a), lambda: (src, dst), calls=5, replays=15, graph=False)
    return 2 * src.numel() * src.element_size() / (timing.us * 1e-6) / 1e9


def git_sha() -> str:
    """SSDK_GIT_SHA, else a snapshot's SNAPSHOT_SHA (scripts/snapshot.sh; the device copy has no .git),
    else git."""
    if os.environ.get("SSDK_GIT_SHA"):
        return os.environ["SSDK_GIT_SHA"]
    snapshot = next((p / "SNAPSHOT_SHA" for p in (Path.cwd(), *Path.cwd().parents) if (p / "SNAPSHOT_SHA").exists()),
                    None)
    if snapshot is not None:
        return snapshot.read_text().strip()
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = "unknown"
    return sha


@dataclass
class BenchResults:
    """Rows of one benchmark run, written in the schema of DESIGN.md section 7."""

    rows: list[dict] = field(default_factory=list)
    copy_gbps: float | None = None

    def add(self, op: str, shape: str, provider: str, us: float, gbps: float | None, **extra: object) -> None:
        self.rows.append({"op": op, "shape": shape, "provider": provider, "us": round(us, 3),
                          "gbps": None if gbps is None else round(gbps, 1), "extra": extra})

    def write(self, path: str | Path) -> None:
        payload = {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "git_sha": git_sha(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "copy_gbps": None if self.copy_gbps is None else round(self.copy_gbps, 1),
            "rows": self.rows,
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1) + "\n")
