"""Per-kernel GPU times of verify_chain (K=6, V=128256, bf16), from torch.profiler over eager calls.

Splits the op's time into its launches (zero_kernel, stats_kernel, verify_kernel; small stochastic batches
take chain_resident_kernel instead) so that a change can be judged per launch: stats_kernel's time against
its bytes (every target and draft row once) is its streaming efficiency; verify_kernel starts as a
programmatic dependent of stats_kernel, so its span includes the statistics' tail, and its end minus
stats_kernel's end is what it adds. Prints one line per (B, mode).
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from bench_verify import chain_inputs
from ssdk.ops import get_impl
from ssdk.testing.bench import copy_bandwidth_gbps


def main() -> None:
    verify_chain = get_impl("verify_chain", "cuda")
    k, vocab, calls = 6, 128256, 20
    gbps = copy_bandwidth_gbps()
    print(f"copy bandwidth {gbps:.0f} GB/s")
    for batch in (1, 2, 16, 64):
        target, draft, ids = chain_inputs(batch, k, vocab, torch.bfloat16)
        out = torch.empty(batch, k + 1, dtype=torch.int32, device="cuda")
        length = torch.empty(batch, dtype=torch.int32, device="cuda")
        temperature = torch.ones(batch, device="cuda")
        for mode, rows in (("stochastic", 2 * k + 1), ("greedy", k + 1)):
            stochastic = mode == "stochastic"

            def call():
                verify_chain(out, length, target, ids, draft if stochastic else None, None,
                             temperature if stochastic else None, None, None, None, 0, 1, 2, None)

            for _ in range(3):
                call()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(calls):
                    call()
                    torch.cuda.synchronize()
            events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            spans: dict[str, list[tuple[float, float]]] = {}
            for e in events:
                name = next((n for n in ("zero_kernel", "stats_kernel", "verify_kernel", "chain_resident_kernel")
                             if n in e.name), None)
                if name:
                    spans.setdefault(name, []).append((e.time_range.start, e.time_range.end))
            floor = batch * rows * vocab * 2 / (gbps * 1e3)
            parts = []
            for name, ranges in spans.items():
                parts.append(f"{name} {sum(end - start for start, end in ranges) / len(ranges):.1f}")
            if "stats_kernel" in spans and "verify_kernel" in spans:
                tail = [v[1] - s[1] for s, v in zip(spans["stats_kernel"], spans["verify_kernel"])]
                first = [s[1] - s[0] for s in spans["stats_kernel"]]
                parts.append(f"verify end - stats end {sum(tail) / len(tail):.1f}")
                parts.append(f"stats {floor / (sum(first) / len(first)) * 100:.0f} % of the copy floor")
            print(f"B={batch} {mode}: floor {floor:.1f} us; " + ", ".join(parts) + " (us, eager means)")


if __name__ == "__main__":
    main()
