"""Shared benchmark plumbing: providers that may be missing, the table printer, result files.

Every bench_<op>.py hands the Runner (shape, provider, fn, make_args, bytes) cases; the providers of one
(op, shape) are timed together, interleaved in balanced orders (ssdk.testing.bench.time_interleaved,
CUDA-graph replay medians); the Runner prints ``shape | provider | µs | GB/s | %peak`` and writes
bench_kernels/results/<op>.json.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from ssdk.testing.bench import (
    BenchResults,
    PreparedOp,
    Timing,
    copy_bandwidth_gbps,
    prepare_op,
    time_interleaved,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def optional_module(name: str):
    """Import ``name`` or return None (flashinfer, liger_kernel, ... are optional providers)."""
    try:
        return importlib.import_module(name)
    except Exception as err:  # ImportError, or a JIT/driver problem inside the package
        print(f"[bench] provider module {name} unavailable: {type(err).__name__}: {err}", file=sys.stderr)
        return None


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer shapes and replays (smoke run)")
    parser.add_argument("--cold", action="store_true", help="rotate inputs beyond L2 (default: hot L2)")
    parser.add_argument("--out", type=Path, default=None, help="result JSON path (default results/<op>.json)")
    parser.add_argument("--providers", default=None, help="comma-separated subset of providers")
    parser.add_argument("--sequential", action="store_true",
                        help="time each provider alone, one after the other (default: a shape's providers "
                             "interleaved in balanced orders)")
    return parser.parse_args()


@dataclass
class _Case:
    shape: str
    provider: str
    op: str
    nbytes: int | None
    extra: dict
    prepared: PreparedOp | None = None
    error: str | None = None
    timing: Timing | None = None


class Runner:
    """Times cases, prints the table, collects result rows.

    The providers of one (op, shape) are timed as a group: each is warmed up and captured, then
    ``replays`` rounds replay every provider once, in balanced orders (each provider equally often in each
    position and right after each other provider; ``--sequential``: each provider's replays back to back,
    before the next provider is captured). A provider that cannot be captured (eager fallback) is timed
    alone, at once. Timed one after the other, FlashInfer's fused_add_rmsnorm at 4096x4096 took 43.2 µs as
    the 5th provider of a shape (after torch eager and torch.compile) and 47.9-48.1 µs timed first or last
    in a one-process A/B (H100), so neither a provider's position nor its predecessor may be fixed.
    Providers given the same ``make_args`` callable run on the same argument buffers.
    """

    def __init__(self, op: str, args: argparse.Namespace) -> None:
        if not torch.cuda.is_available():
            raise SystemExit("benchmarks need a CUDA GPU")
        self.op, self.args = op, args
        self.results = BenchResults()
        self.results.copy_gbps = copy_bandwidth_gbps()
        self.wanted = set(args.providers.split(",")) if args.providers else None
        self._group: list[_Case] = []  # the cases of the current (op, shape), timed together at flush
        self._arg_sets: dict[int, tuple[Callable, list[tuple]]] = {}  # id(make_args) -> argument sets
        order = "sequential" if args.sequential else "interleaved"
        print(f"# {op} on {torch.cuda.get_device_name()}  torch {torch.__version__}  "
              f"copy bandwidth {self.results.copy_gbps:.0f} GB/s  L2 {'cold' if args.cold else 'hot'}  "
              f"providers {order}")
        print(f"{'shape':28s} | {'provider':14s} | {'us':>9s} | {'GB/s':>7s} | {'%peak':>6s}")

    @property
    def replays(self) -> int:
        return 10 if self.args.quick else 25

    def run(self, shape: str, provider: str, fn: Callable, make_args: Callable, nbytes: int | None,
            op: str | None = None, **extra: object) -> None:
        """Queue one case; it is timed with the other providers of its (op, shape)."""
        if self.wanted and provider not in self.wanted:
            return
        op = op or self.op
        if self._group and (self._group[0].op, self._group[0].shape) != (op, shape):
            self.flush()
        case = _Case(shape, provider, op, nbytes, extra)
        try:
            case.prepared = prepare_op(fn, self._shared(make_args), bytes_per_call=nbytes or 0,
                                       cold_l2=self.args.cold)
            # Eager fallbacks call fn again at every replay, so they are timed now, while the bench's loop
            # variables that fn may read still hold this shape's values.
            if self.args.sequential or case.prepared.method == "eager":
                case.timing = time_interleaved([case.prepared], self.replays)[0]
                case.prepared = None
        except Exception as err:  # a provider that cannot run this shape is reported, not fatal
            case.error = f"{type(err).__name__}: {str(err)[:80]}"
        self._group.append(case)

    def flush(self) -> None:
        """Time the queued providers of the current (op, shape) interleaved; print and record them."""
        group, self._group = self._group, []
        pending = [c for c in group if c.prepared is not None]
        for case, timing in zip(pending, time_interleaved([c.prepared for c in pending], self.replays)):
            case.timing, case.prepared = timing, None  # drops the graph
        for c in group:
            if c.timing is None:
                print(f"{c.shape:28s} | {c.provider:14s} | failed: {c.error}")
                continue
            gbps = c.nbytes / (c.timing.us * 1e-6) / 1e9 if c.nbytes else None
            peak = f"{100 * gbps / self.results.copy_gbps:5.1f}%" if gbps else "     -"
            print(f"{c.shape:28s} | {c.provider:14s} | {c.timing.us:9.2f} | {gbps or 0:7.0f} | {peak}")
            self.results.add(c.op, c.shape, c.provider, c.timing.us, gbps, timing=c.timing.method,
                             l2="cold" if self.args.cold else "hot", **c.extra)
        self._arg_sets.clear()

    def _shared(self, make_args: Callable) -> Callable:
        """``make_args`` whose i-th call returns the i-th argument set made by this callable in the group."""
        _, sets = self._arg_sets.setdefault(id(make_args), (make_args, []))  # holding make_args pins its id
        calls = 0

        def shared() -> tuple:
            nonlocal calls
            if calls == len(sets):
                sets.append(tuple(make_args()))
            calls += 1
            return sets[calls - 1]
        return shared

    def write(self) -> Path:
        self.flush()
        path = self.args.out or RESULTS_DIR / f"{self.op}.json"
        self.results.write(path)
        print(f"# wrote {path}")
        return path


def compiled(fn: Callable) -> Callable:
    """torch.compile provider (default mode; graph-replayed by the timer like every provider).

    Static shapes, one specialization per benchmark shape (the recompile limit is raised for that).
    """
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096
    return torch.compile(fn, fullgraph=True, dynamic=False)


def compiled_dynamic(fn: Callable) -> Callable:
    """torch.compile provider with dynamic token counts: one compile per op instead of one per shape
    (the generated kernels take numel at run time; T=1 is still specialized)."""
    return torch.compile(fn, fullgraph=True, dynamic=True)
