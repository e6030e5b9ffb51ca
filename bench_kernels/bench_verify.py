"""Speculative verification and sampling from logits vs torch and FlashInfer.

Ops and byte models (floor = bytes / copy bandwidth, bf16 logits unless the shape says fp32; every row's
extra carries floor_us and the printed %peak column is the percentage of that floor reached):
  verify_chain       stochastic chain from target + draft logits, T = 1: reads B(K+1)V + BKV logits.
                     flashinfer = chain_speculative_sampling fed precomputed probabilities (the issue's
                     anchor: only the residual rows are read); flashinfer+softmax adds the two softmaxes.
  verify_chain_greedy  target logits only: B(K+1)V.
  chain_speculative_sampling  the FlashInfer drop-in on fp32 probabilities: ~2 rows of V per request.
  verify_tree        stochastic tree (root fan-out F, chains of depth K: 1 + F*K nodes): N*V.
  sample_tokens      B rows of V (T = 0.8; +top-k 50 / top-p 0.9 in the "filtered" provider).
"""

from __future__ import annotations

import torch

from _common import Runner, optional_module, parse_args
from ssdk.ops import get_impl
from ssdk.ref import verify as ref


def chain_inputs(batch: int, k: int, vocab: int, dtype: torch.dtype):
    target = torch.randn(batch, k + 1, vocab, device="cuda").mul_(3).to(dtype)
    draft = (target[:, :k].float() + torch.randn(batch, k, vocab, device="cuda")).to(dtype)
    ids = torch.where(torch.rand(batch, k, device="cuda") < 0.7, target[:, :k].float().argmax(-1),
                      torch.randint(0, vocab, (batch, k), device="cuda"))
    return target, draft, ids


def torch_greedy_chain(target, draft, ids, out, accept_len):
    """Greedy chain verification in plain torch (capturable: ref.verify_chain checks its temperatures on the
    host, and a failed capture leaves the RNG unusable for every later case)."""
    argmax = target.float().argmax(-1)
    accepted = (ids == argmax[:, :-1]).long().cumprod(-1)
    length = accepted.sum(-1)
    tokens = torch.where(accepted.bool(), ids, -1)
    tokens = torch.cat([tokens, ids.new_full((ids.shape[0], 1), -1)], 1)
    tokens.scatter_(1, length[:, None], argmax.gather(1, length[:, None]))
    out.copy_(tokens)
    accept_len.copy_(length)


def main() -> None:
    args = parse_args(__doc__)
    fi_sampling = optional_module("flashinfer.sampling")
    if args.quick:
        chain_grid = [(b, 6, 128256, torch.bfloat16) for b in (1, 2, 4, 16, 64)] + [(64, 6, 151936, torch.float32)]
    else:
        chain_grid = [(b, k, v, torch.bfloat16) for b in (1, 4, 16, 64) for k in (4, 6, 8) for v in (128256, 151936)]
        chain_grid += [(b, 6, 128256, torch.float32) for b in (1, 16, 64)]
    runner = Runner("verify", args)

    def floor_us(nbytes: int) -> float:
        return round(nbytes / (runner.results.copy_gbps * 1e3), 3)
    cuda = {op: get_impl(op, "cuda") for op in ("verify_chain", "chain_speculative_sampling", "verify_tree",
                                                "sample_tokens")}
    triton = {op: get_impl(op, "triton") for op in ("verify_chain", "sample_tokens")}

    for batch, k, vocab, dtype in chain_grid:
        size = torch.finfo(dtype).bits // 8
        shape = f"B={batch},K={k},V={vocab}" + (",fp32" if dtype == torch.float32 else "")
        extra = dict(batch=batch, k=k, vocab=vocab, dtype=str(dtype).replace("torch.", ""))
        temperature = torch.ones(batch, device="cuda")

        def make():
            target, draft, ids = chain_inputs(batch, k, vocab, dtype)
            return (target, draft, ids, torch.empty(batch, k + 1, dtype=torch.int32, device="cuda"),
                    torch.empty(batch, dtype=torch.int32, device="cuda"))

        stochastic_bytes = (2 * k + 1) * batch * vocab * size
        greedy_bytes = (k + 1) * batch * vocab * size
        chain_extra = dict(extra, floor_us=floor_us(stochastic_bytes))
        runner.run(shape, "ssdk-cuda", lambda t, d, i, o, n, temp=temperature: cuda["verify_chain"](
            o, n, t, i, d, None, temp, None, None, None, 0, 1, 2, None), make, stochastic_bytes,
            op="verify_chain", **chain_extra)
        if batch <= 16 and k == 6:
            runner.run(shape, "ssdk-triton", lambda t, d, i, o, n, temp=temperature: triton["verify_chain"](
                o, n, t, i, d, None, temp, None, None, None, 0, 1, 2, None), make, stochastic_bytes,
                op="verify_chain", **chain_extra)
            runner.run(shape, "torch", lambda t, d, i, o, n, temp=temperature: ref.verify_chain(
                t, i, temp, draft_logits=d), make, stochastic_bytes, op="verify_chain", **chain_extra)
        if fi_sampling is not None:
            def make_probs():
                target, draft, ids, _, _ = make()
                return (torch.softmax(target.float(), -1), torch.softmax(draft.float(), -1), ids.int(),
                        torch.empty(batch, k + 1, dtype=torch.int32, device="cuda"),
                        torch.zeros(batch, dtype=torch.int32, device="cuda"),
                        torch.zeros(batch, dtype=torch.int32, device="cuda"))

            runner.run(shape, "flashinfer", lambda p, q, i, *_: fi_sampling.chain_speculative_sampling(q, i, p),
                       make_probs, stochastic_bytes, op="verify_chain", **chain_extra)
            runner.run(shape, "flashinfer+softmax", lambda t, d, i, o, n: fi_sampling.chain_speculative_sampling(
                fi_sampling.softmax(d.flatten(0, 1), 1.0).view(d.shape), i.int(),
                fi_sampling.softmax(t.flatten(0, 1), 1.0).view(t.shape)), make, stochastic_bytes,
                op="verify_chain", **chain_extra)
            runner.run(shape, "ssdk-cuda", lambda p, q, i, o, acc, emit: cuda["chain_speculative_sampling"](
                o, acc, emit, q, i, p, 1, 2, None), make_probs, 2 * batch * vocab * 4, op="chain_speculative_sampling",
                **extra)
            runner.run(shape, "flashinfer", lambda p, q, i, *_: fi_sampling.chain_speculative_sampling(q, i, p),
                       make_probs, 2 * batch * vocab * 4, op="chain_speculative_sampling", **extra)
        greedy_extra = dict(extra, floor_us=floor_us(greedy_bytes))
        runner.run(shape, "ssdk-cuda", lambda t, d, i, o, n: cuda["verify_chain"](
            o, n, t, i, None, None, None, None, None, None, 0, 1, 2, None), make, greedy_bytes,
            op="verify_chain_greedy", **greedy_extra)
        runner.run(shape, "torch", torch_greedy_chain, make, greedy_bytes, op="verify_chain_greedy", **greedy_extra)

    tree_grid = [(1, 6, 3), (16, 6, 3), (64, 6, 3)] if args.quick else \
        [(b, k, f) for b in (1, 4, 16, 64) for k in (4, 6, 8) for f in (2, 3)]
    vocab = 128256
    for batch, k, fan in tree_grid:
        tree = [-1] + [0] * fan + [1 + j for j in range(fan * (k - 1))]  # fan chains of depth k under the root
        n = len(tree)
        shape = f"B={batch},K={k},F={fan},V={vocab}"
        parents = torch.tensor(tree * batch, dtype=torch.int32, device="cuda")
        qo_indptr = torch.arange(0, n * batch + 1, n, dtype=torch.int32, device="cuda")
        temperature = torch.ones(batch, device="cuda")

        def make_tree():
            logits = torch.randn(n * batch, vocab, device="cuda").mul_(3).to(torch.bfloat16)
            tokens = torch.randint(0, vocab, (n * batch,), device="cuda")
            return (logits, tokens, torch.empty(batch, dtype=torch.int32, device="cuda"),
                    torch.empty(batch, k + 1, dtype=torch.int32, device="cuda"),
                    torch.empty(batch, k + 1, dtype=torch.int32, device="cuda"))

        def tree_fn(lg, tk, a, nd, o, p=parents, q=qo_indptr, temp=temperature):
            cuda["verify_tree"](a, nd, o, lg, tk, p, q, temp, None, None, 1, 2, None)

        runner.run(shape, "ssdk-cuda", tree_fn, make_tree, n * batch * vocab * 2, op="verify_tree", batch=batch, k=k,
                   f=fan, vocab=vocab)

    torch_sample_cases = []
    for batch in ((1, 16, 64) if args.quick else (1, 4, 16, 64)):
        shape = f"B={batch},V={vocab}"
        temperature = torch.full((batch,), 0.8, device="cuda")
        top_k = torch.full((batch,), 50, dtype=torch.int32, device="cuda")
        top_p = torch.full((batch,), 0.9, device="cuda")

        def make_rows():
            return torch.randn(batch, vocab, device="cuda").mul_(3).to(torch.bfloat16), \
                torch.empty(batch, dtype=torch.int64, device="cuda")

        nbytes = batch * vocab * 2
        extra = dict(batch=batch, vocab=vocab)
        # Loop values bound as defaults: a provider whose capture fails runs eagerly when its group is
        # flushed, which happens after the next iteration has rebound the loop variables.
        runner.run(shape, "ssdk-cuda", lambda x, o, t=temperature: cuda["sample_tokens"](
            o, x, t, None, None, None, 0, 1, 2, None), make_rows, nbytes, op="sample_tokens", **extra)
        runner.run(shape, "ssdk-cuda-filtered", lambda x, o, t=temperature, tk=top_k, tp=top_p: cuda["sample_tokens"](
            o, x, t, tk, tp, None, 0, 1, 2, None), make_rows, nbytes, op="sample_tokens", **extra)
        runner.run(shape, "ssdk-triton", lambda x, o, t=temperature: triton["sample_tokens"](
            o, x, t, None, None, None, 0, 1, 2, None), make_rows, nbytes, op="sample_tokens", **extra)
        rows = make_rows()  # drawn now: the torch case runs last (below)
        torch_sample_cases.append((shape, temperature, (lambda rows=rows: rows), nbytes, extra))
        if fi_sampling is not None:
            runner.run(shape, "flashinfer", lambda x, o: fi_sampling.sampling_from_logits(x / 0.8), make_rows, nbytes,
                       op="sample_tokens", **extra)
            runner.run(shape, "flashinfer-filtered", lambda x, o, tk=top_k, tp=top_p:
                       fi_sampling.top_k_top_p_sampling_from_logits(x / 0.8, tk, tp), make_rows, nbytes,
                       op="sample_tokens", **extra)
    # ref.sample_tokens checks its temperatures on the host, so its capture fails and falls back to eager
    # timing; a failed capture leaves torch's CUDA RNG unusable, so these cases run last on inputs drawn above.
    for shape, temperature, make_rows, nbytes, extra in torch_sample_cases:
        runner.run(shape, "torch", lambda x, o, t=temperature: ref.sample_tokens(x, t, None, None, 1, 2), make_rows,
                   nbytes, op="sample_tokens", **extra)
    runner.write()


if __name__ == "__main__":
    main()
