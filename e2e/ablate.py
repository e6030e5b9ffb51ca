"""What each kind of small kernel really costs inside a CUDA-graph decode step (GPU only).

With programmatic dependent launch the profiler's per-kernel times include waits, so they cannot say
what a kernel costs the step. This script removes one kind of kernel at a time from the model (the
step's numbers become meaningless, its timing does not) and reports the change of the graph-replay
time of one decode step against the unmodified model, all in one process:

    python e2e/ablate.py --model synthetic:llama-3.1-8b --context 375

Variants: norms (RMSNorm layers return their input; residual adds skipped), silu (the MLP's SwiGLU
returns the gate half), rope (RoPE + KV write skipped), attention (the attention layer returns q), and
all four at once (what the GEMVs, the LM head and the sampler cost alone). Writes
e2e/results/ablate_<model>_<sha>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import torch

from ssdk import LLM, SamplingParams
from ssdk.engine.layers.activation import SiluAndMul
from ssdk.engine.layers.attention import Attention
from ssdk.engine.layers.norm import RMSNorm
from ssdk.engine.layers.rotary import RotaryEmbedding
from ssdk.testing.bench import git_sha

SKIPS = {  # variant -> (class, replacement forward)
    "norms": (RMSNorm, lambda self, x, residual=None: x if residual is None else (x, residual)),
    "silu": (SiluAndMul, lambda self, x: x[..., : x.shape[-1] // 2]),
    "rope": (RotaryEmbedding, lambda self, positions, query, key, kv_write=None: None),
    "attention": (Attention, lambda self, q, k, v, kv_stored=False: q),
}


@contextlib.contextmanager
def skipping(names: list[str]) -> Iterator[None]:
    saved = {name: SKIPS[name][0].forward for name in names}
    try:
        for name in names:
            SKIPS[name][0].forward = SKIPS[name][1]
        yield
    finally:
        for name, forward in saved.items():
            SKIPS[name][0].forward = forward


def replay_ms(llm: LLM, context: int, replays: int = 100, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean GPU time of ``replays`` back-to-back replays of the B=1 decode graph,
    after a greedy generate that leaves the graph's buffers at ``context`` tokens."""
    prompt = torch.randint(1000, 30000, (119,), generator=torch.Generator().manual_seed(0)).tolist()
    llm.generate([prompt], SamplingParams(temperature=0, max_tokens=max(context - 119, 1), ignore_eos=True),
                 use_tqdm=False)
    graph = llm.runner.graphs.graphs[min(llm.runner.graphs.buckets)]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(rounds):
        graph.replay()
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / replays)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="synthetic:llama-3.1-8b")
    p.add_argument("--context", type=int, default=375, help="tokens in the KV cache when timing (119 + 256)")
    args = p.parse_args()
    variants = [[], *([name] for name in SKIPS), list(SKIPS)]
    results = {}
    for names in variants:
        label = "+".join(names) or "none"
        with skipping(names):
            llm = LLM(args.model, progress=False, max_model_len=args.context + 64, max_num_seqs=1)
            results[label] = round(replay_ms(llm, args.context), 4)
            llm.close()
            del llm
            gc.collect()
            torch.cuda.empty_cache()
        base = results["none"]
        print(f"skip {label:32s} replay {results[label]:.4f} ms  (saves {base - results[label]:+.4f} ms)", flush=True)
    sha = git_sha()
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "git_sha": sha, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "model": args.model, "batch": 1, "context": args.context, "replay_ms_by_skipped": results}
    path = Path(__file__).parent / "results" / f"ablate_{args.model.split(':')[-1]}_{sha}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
