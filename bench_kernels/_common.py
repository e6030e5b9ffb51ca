"""Shared benchmark plumbing: providers that may be missing, the table printer, result files.

Every bench_<op>.py builds a list of (shape, provider, fn, make_args, bytes) cases, times each with
ssdk.testing.bench.time_op (CUDA-graph replay median), prints
``shape | provider | µs | GB/s | %peak`` and writes bench_kernels/results/<op>.json.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ssdk.testing.bench import BenchResults, copy_bandwidth_gbps, time_op

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
    return parser.parse_args()


class Runner:
    """Times cases, prints the table, collects result rows.

    Providers given the same ``make_args`` callable run on the same argument buffers: where a tensor
    lies in memory moves a memory-bound kernel by several percent (FlashInfer's fused_add_rmsnorm at
    4096x4096 took 43.2 µs on the buffers it got after four other providers and 47.9-48.1 µs on the
    buffers ssdk-cuda got in the same position, H100), so only shared buffers compare kernels.
    """

    def __init__(self, op: str, args: argparse.Namespace) -> None:
        if not torch.cuda.is_available():
            raise SystemExit("benchmarks need a CUDA GPU")
        self.op, self.args = op, args
        self.results = BenchResults()
        self.results.copy_gbps = copy_bandwidth_gbps()
        self.wanted = set(args.providers.split(",")) if args.providers else None
        self._args_of: Callable | None = None  # the make_args whose argument sets are cached
        self._arg_sets: list[tuple] = []
        print(f"# {op} on {torch.cuda.get_device_name()}  torch {torch.__version__}  "
              f"copy bandwidth {self.results.copy_gbps:.0f} GB/s  L2 {'cold' if args.cold else 'hot'}")
        print(f"{'shape':28s} | {'provider':14s} | {'us':>9s} | {'GB/s':>7s} | {'%peak':>6s}")

    def run(self, shape: str, provider: str, fn: Callable, make_args: Callable, nbytes: int | None,
            op: str | None = None, **extra: object) -> float | None:
        if self.wanted and provider not in self.wanted:
            return None
        try:
            timing = time_op(fn, self._shared(make_args), bytes_per_call=nbytes or 0, cold_l2=self.args.cold,
                             replays=10 if self.args.quick else 25)
        except Exception as err:  # a provider that cannot run this shape is reported, not fatal
            print(f"{shape:28s} | {provider:14s} | failed: {type(err).__name__}: {str(err)[:80]}")
            return None
        gbps = nbytes / (timing.us * 1e-6) / 1e9 if nbytes else None
        peak = f"{100 * gbps / self.results.copy_gbps:5.1f}%" if gbps else "     -"
        print(f"{shape:28s} | {provider:14s} | {timing.us:9.2f} | {gbps or 0:7.0f} | {peak}")
        self.results.add(op or self.op, shape, provider, timing.us, gbps, timing=timing.method,
                         l2="cold" if self.args.cold else "hot", **extra)
        return timing.us

    def _shared(self, make_args: Callable) -> Callable:
        """``make_args`` whose i-th call returns the i-th argument set made for this callable so far."""
        if self._args_of is not make_args:
            self._args_of, self._arg_sets = make_args, []
        calls = 0

        def shared() -> tuple:
            nonlocal calls
            if calls == len(self._arg_sets):
                self._arg_sets.append(tuple(make_args()))
            calls += 1
            return self._arg_sets[calls - 1]
        return shared

    def write(self) -> Path:
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
