"""Tree attention over a paged KV cache vs FlashInfer (custom-mask prefill, decode) and torch SDPA.

Problem: B requests, each with a `prefix`-token paged prefix (page size 16, pages scattered) and n new
tokens (a random draft tree for n > 1, the decode token for n = 1) already in the cache.
Byte model: every KV byte is read once, K and V: B·(prefix + n)·Hkv·D·2·s, plus q in and out
(2·B·n·Hq·D·s). Floor = bytes / copy bandwidth of the same run (reported as %peak).

Providers: ssdk-cuda (n = 1 takes the decode kernel), ssdk-cuda-general (n = 1 rows through the tree
kernel, max_q_len = 2), ssdk-triton; flashinfer-mask (BatchPrefillWithPagedKVCacheWrapper + custom_mask,
planned once, run timed), flashinfer-mask+plan (dense mask build + plan + run, eager: plan syncs the
host, as an engine that re-plans every step pays); flashinfer-decode (n = 1,
BatchDecodeWithPagedKVCacheWrapper); torch-sdpa (scaled_dot_product_attention on pre-gathered dense
K/V with a dense bool mask; the gather is not timed).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from _common import Runner, optional_module, parse_args
from ssdk.ops import get_impl
from ssdk.ref import attention as ref
from ssdk.testing.bench import time_op

MODELS = {"1B": (32, 8, 64), "8B": (32, 8, 128)}  # (q heads, kv heads, head dim)
PAGE_SIZE = 16
# (model, B, prefix, n); the first rows carry the targets.
QUICK = [("1B", 1, 1024, 21), ("1B", 16, 1024, 21), ("1B", 1, 1024, 1), ("1B", 16, 1024, 1), ("1B", 64, 4096, 1),
         ("8B", 1, 1024, 1), ("8B", 16, 1024, 1), ("8B", 64, 4096, 1), ("1B", 4, 1024, 7), ("1B", 16, 1024, 133),
         ("1B", 1, 4096, 64), ("8B", 16, 1024, 21), ("8B", 1, 1024, 21), ("1B", 64, 1024, 21), ("1B", 4, 128, 64),
         ("8B", 4, 4096, 133)]
# --quick first times every decode (n = 1) shape of the full grid (providers below: ssdk against FlashInfer's
# decode kernel, and the decode kernel at fixed split counts for B <= 16), then the QUICK trees.
QUICK_DECODE = [(model, batch, prefix, 1) for model in MODELS for batch in (1, 4, 16, 64) for prefix in (128, 1024, 4096)]
DECODE_SPLITS = (1, 2, 4, 8, 16, 32, 64)  # 32 and 64 only at B <= 4 (more would not fit one wave)
DECODE_PROVIDERS = {"ssdk-cuda", "ssdk-cuda-general", "flashinfer-decode"} | {f"ssdk-cuda-s{s}" for s in DECODE_SPLITS}


def full_grid() -> list[tuple[str, int, int, int]]:
    return [(model, batch, prefix, n) for model in MODELS for batch in (1, 4, 16, 64) for prefix in (128, 1024, 4096)
            for n in (1, 7, 21, 64, 133)]


def random_tree_mask(batch: int, n: int, device: str) -> torch.Tensor:
    """[batch * n, ceil(n / 32)] ancestor bits of a random tree per request (parents before children)."""
    rows = []
    for _ in range(batch):
        parent = [-1] + [int(torch.randint(0, i, (1,))) for i in range(1, n)]
        visible = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            j = i
            while j >= 0:
                visible[i, j] = True
                j = parent[j]
        rows.append(ref.pack_ancestor_bits(visible))
    return torch.cat(rows).to(device)


def problem(model: str, batch: int, prefix: int, n: int) -> dict:
    hq, hkv, d = MODELS[model]
    kv_len = prefix + n
    pages_per_req = (kv_len + PAGE_SIZE - 1) // PAGE_SIZE
    num_pages = batch * pages_per_req
    dtype = torch.bfloat16
    k_cache = torch.randn(num_pages, PAGE_SIZE, hkv, d, dtype=dtype, device="cuda")
    v_cache = torch.randn_like(k_cache)
    block_tables = torch.randperm(num_pages, device="cuda").int().view(batch, pages_per_req)
    return dict(q=torch.randn(batch * n, hq, d, dtype=dtype, device="cuda"), k_cache=k_cache, v_cache=v_cache,
                block_tables=block_tables,
                prefix_lens=torch.full((batch,), prefix, dtype=torch.int32, device="cuda"),
                qo_indptr=torch.arange(0, batch * n + 1, n, dtype=torch.int32, device="cuda"),
                tree_mask=random_tree_mask(batch, n, "cuda") if n > 1 else None,
                out=torch.empty(batch * n, hq, d, dtype=dtype, device="cuda"), n=n, scale=1 / math.sqrt(d))


def run_eager(runner: Runner, shape: str, provider: str, fn, nbytes: int) -> None:
    """Runner.run for a call that cannot be graph-captured (host sync inside): event-timed launches."""
    if runner.wanted and provider not in runner.wanted:
        return
    try:
        timing = time_op(fn, lambda: (), graph=False, calls=5, replays=5 if runner.args.quick else 15)
    except Exception as err:
        print(f"{shape:28s} | {provider:14s} | failed: {type(err).__name__}: {str(err)[:80]}")
        return
    gbps = nbytes / (timing.us * 1e-6) / 1e9
    print(f"{shape:28s} | {provider:14s} | {timing.us:9.2f} | {gbps:7.0f} | {100 * gbps / runner.results.copy_gbps:5.1f}%")
    runner.results.add("tree_attention", shape, provider, timing.us, gbps, timing=timing.method, l2="hot")


def main() -> None:
    args = parse_args(__doc__)
    flashinfer = optional_module("flashinfer")
    runner = Runner("tree_attention", args)
    ssdk_cuda = get_impl("tree_attention", "cuda")
    ssdk_triton = get_impl("tree_attention", "triton")
    workspace = torch.empty(128 << 20, dtype=torch.uint8, device="cuda")
    wanted = runner.wanted

    def wants(*providers: str) -> bool:
        return not runner.wanted or any(name in runner.wanted for name in providers)

    grid = QUICK_DECODE + [shape for shape in QUICK if shape not in QUICK_DECODE] if args.quick else full_grid()
    for model, batch, prefix, n in grid:
        if args.quick:  # decode rows: DECODE_PROVIDERS only (an empty set would mean all to the runner)
            decode_row = (model, batch, prefix, n) in QUICK_DECODE
            runner.wanted = ((DECODE_PROVIDERS & wanted if wanted else DECODE_PROVIDERS) or {"-"}) if decode_row else wanted
        hq, hkv, d = MODELS[model]
        shape = f"{model},B={batch},L={prefix},n={n}"
        p = problem(model, batch, prefix, n)
        nbytes = batch * (prefix + n) * hkv * d * 2 * 2 + 2 * batch * n * hq * d * 2
        floor_us = nbytes / (runner.results.copy_gbps * 1e3)
        ssdk_args = (p["out"], None, p["q"], p["k_cache"], p["v_cache"], p["block_tables"], p["prefix_lens"],
                     p["qo_indptr"], p["tree_mask"], n, p["scale"], 0)
        args_fn = lambda: ssdk_args  # noqa: E731  (the same buffers every call: hot L2 unless --cold)
        runner.run(shape, "ssdk-cuda", ssdk_cuda, args_fn, nbytes, floor_us=round(floor_us, 2))
        if n == 1:  # the general (tree) kernel on the same rows: max_q_len = 2 is a valid upper bound
            general = ssdk_args[:9] + (2,) + ssdk_args[10:]
            runner.run(shape, "ssdk-cuda-general", ssdk_cuda, lambda: general, nbytes)
        runner.run(shape, "ssdk-triton", ssdk_triton, args_fn, nbytes)
        if args.quick and batch <= 16:  # diagnostics: the split heuristic against fixed split counts
            for splits in DECODE_SPLITS if n == 1 else (1, 4, 16):
                if splits > 16 and batch > 4:
                    continue
                fixed = ssdk_args[:-1] + (splits,)
                runner.run(shape, f"ssdk-cuda-s{splits}", ssdk_cuda, lambda fixed=fixed: fixed, nbytes)

        if flashinfer is not None and wants("flashinfer-mask", "flashinfer-mask+plan", "flashinfer-decode"):
            kv_indptr, kv_indices, last_page_len, custom_mask = ref.to_flashinfer(
                p["block_tables"], p["prefix_lens"], p["qo_indptr"], p["tree_mask"], PAGE_SIZE)
            prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")

            def plan_prefill(mask: torch.Tensor) -> None:
                prefill.plan(p["qo_indptr"], kv_indptr, kv_indices, last_page_len, hq, hkv, d, PAGE_SIZE,
                             custom_mask=mask, q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)

            try:
                if wants("flashinfer-mask"):
                    plan_prefill(custom_mask)
                    runner.run(shape, "flashinfer-mask",
                               lambda q, o: prefill.run(q, (p["k_cache"], p["v_cache"]), out=o),
                               lambda: (p["q"], p["out"]), nbytes)
            except Exception as err:  # JIT or shape limits: report and go on
                print(f"{shape:28s} | flashinfer-mask | failed: {type(err).__name__}: {str(err)[:80]}")

            def mask_plan_run() -> None:
                _, _, _, mask = ref.to_flashinfer(p["block_tables"], p["prefix_lens"], p["qo_indptr"], p["tree_mask"],
                                                  PAGE_SIZE)
                plan_prefill(mask)
                prefill.run(p["q"], (p["k_cache"], p["v_cache"]), out=p["out"])

            if n > 1 or not args.quick:
                run_eager(runner, shape, "flashinfer-mask+plan", mask_plan_run, nbytes)
            if n == 1:
                decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD")
                try:
                    decode.plan(kv_indptr, kv_indices, last_page_len, hq, hkv, d, PAGE_SIZE,
                                q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
                    runner.run(shape, "flashinfer-decode",
                               lambda q, o: decode.run(q, (p["k_cache"], p["v_cache"]), out=o),
                               lambda: (p["q"], p["out"]), nbytes)
                except Exception as err:
                    print(f"{shape:28s} | flashinfer-decode | failed: {type(err).__name__}: {str(err)[:80]}")

        # torch SDPA on dense, pre-gathered K/V ([B, Hkv, L, D]) with a dense [B, 1, n, L] mask.
        if wants("torch-sdpa"):
            pos = torch.arange(prefix + n, device="cuda")
            phys = p["block_tables"][:, pos // PAGE_SIZE].long()
            k_dense = p["k_cache"][phys, pos % PAGE_SIZE].transpose(1, 2).contiguous()
            v_dense = p["v_cache"][phys, pos % PAGE_SIZE].transpose(1, 2).contiguous()
            new_visible = (torch.ones(n, n, dtype=torch.bool, device="cuda").tril().expand(batch, n, n)
                           if p["tree_mask"] is None else ref.unpack_ancestor_bits(p["tree_mask"], n).view(batch, n, n))
            dense_mask = torch.cat([torch.ones(batch, n, prefix, dtype=torch.bool, device="cuda"), new_visible], dim=2)
            q_dense = p["q"].view(batch, n, hq, d).transpose(1, 2)
            runner.run(shape, "torch-sdpa",
                       lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True),
                       lambda: (q_dense, k_dense, v_dense, dense_mask[:, None]), nbytes)
            del p, k_dense, v_dense
        runner.write()  # after every shape: a run cut off by a time limit keeps what it measured


if __name__ == "__main__":
    main()
