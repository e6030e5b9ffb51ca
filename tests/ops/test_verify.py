"""Sampling and speculative verification: Philox known answers, every backend vs the reference
(integer outputs exact; the CUDA kernels' fp32 exp/log may round differently from torch's, so their
stochastic outputs may differ from the reference on a tiny fraction of rows), statistical tests that
the emitted tokens follow the target distribution (chain, tree, temperatures, top-k/top-p, Saguaro),
zero-probability tokens never emitted, CUDA graphs with a device offset, opcheck, torch.compile, bad inputs."""

import pytest
import torch

from ssdk.ops import chain_speculative_sampling, probs_from_logits, saguaro_rescale, sample_tokens, use_backend, \
    verify_chain, verify_tree, verify_tree_greedy
from ssdk.ref import verify as ref

from ._params import BACKEND_DEVICES

CUDA_MISMATCH = 0.02  # largest fraction of rows a CUDA sample may differ from the reference by


def skip_triton_cuda(backend: str, device: str, why: str) -> None:
    if backend == "triton" and device == "cuda":
        pytest.skip(f"triton-cuda covers the plain paths only ({why} is checked under the interpreter; "
                    "its JIT compiles are too slow for the GPU run)")


def assert_rows_match(got: torch.Tensor, expected: torch.Tensor, backend: str) -> None:
    got, expected = got.cpu(), expected.cpu()
    if backend != "cuda" or got.dim() == 0:
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
        return
    differ = (got != expected).reshape(got.shape[0], -1).any(-1).float().mean().item()
    assert differ <= CUDA_MISMATCH, f"{differ:.1%} of rows differ from the reference"


def total_variation(samples: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(samples.cpu().long(), minlength=probs.numel()).double()
    return 0.5 * (counts / counts.sum() - probs.cpu().double()).abs().sum().item()


# ---------------------------------------------------------------- Philox
@pytest.mark.cpu
def test_philox_known_answers():
    # Random123 known-answer vectors for philox4x32-10 (counter, key) -> output
    zeros = torch.zeros(1, dtype=torch.int64)
    out = ref.philox4x32(zeros, zeros, zeros, zeros, 0)
    assert [int(w) for w in out] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    ones = torch.full((1,), 0xFFFFFFFF, dtype=torch.int64)
    out = ref.philox4x32(ones, ones, ones, ones, 0xFFFFFFFFFFFFFFFF)
    assert [int(w) for w in out] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    c = [torch.tensor([v], dtype=torch.int64) for v in (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)]
    out = ref.philox4x32(*c, 0x299F31D0 << 32 | 0xA4093822)
    assert [int(w) for w in out] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


@pytest.mark.cpu
def test_uniform_streams():
    u = ref.uniforms(7, 3, torch.arange(4)[:, None], 1, torch.arange(4096)[None, :])
    assert ((u > 0) & (u < 1)).all()
    assert abs(u.mean().item() - 0.5) < 0.01
    assert len(set(u[:, :8].flatten().tolist())) == 32  # rows and draws are distinct streams
    other = ref.uniforms(7, 4, torch.arange(4)[:, None], 1, torch.arange(4096)[None, :])
    assert not torch.equal(u, other)


# ---------------------------------------------------------------- helpers
def device_generator(gen: torch.Generator, device: str) -> torch.Generator:
    """A generator on `device` seeded from `gen`: big test tensors are drawn where they are used (drawing
    the 128k-vocabulary ones on the host dominated the GPU run)."""
    return torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))


def logits_for(device: str, rows: int, vocab: int, dtype=torch.float32, scale: float = 3.0, gen=None):
    gen = None if gen is None else device_generator(gen, device)
    return (torch.randn(rows, vocab, generator=gen, device=device) * scale).to(dtype)


def vocab_sizes(device: str) -> list[int]:
    return [37] if device == "cpu" else [37, 128256, 151936]


def filters(batch: int, device: str):
    top_k = torch.tensor([0, 5, 1, 40][:batch] * (batch // 4 + 1), dtype=torch.int32)[:batch].to(device)
    top_p = torch.tensor([1.0, 0.8, 0.5, 0.95][:batch] * (batch // 4 + 1))[:batch].to(device)
    return top_k, top_p


# ---------------------------------------------------------------- sample_tokens / probs
@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("variant", ["plain", "top_k", "top_p", "both_saguaro"])
def test_sample_tokens_matches_reference(backend, device, variant):
    if variant != "plain":
        skip_triton_cuda(backend, device, "filtering")
    gen = torch.Generator().manual_seed(11)
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.bfloat16]
    for vocab in vocab_sizes(device):
        for dtype in dtypes:
            batch = 4 if device == "cpu" else 48
            logits = logits_for(device, batch, vocab, dtype, gen=gen)
            temperature = torch.tensor([0.0, 0.7, 1.0, 1.6] * (batch // 4), device=device)
            top_k, top_p = filters(batch, device)
            kwargs = {"top_k": top_k if variant in ("top_k", "both_saguaro") else None,
                      "top_p": top_p if variant in ("top_p", "both_saguaro") else None}
            sag = torch.full((batch,), 0.3, device=device) if variant == "both_saguaro" else None
            expected = ref.sample_tokens(logits, temperature, kwargs["top_k"], kwargs["top_p"], 5, 9, sag, 2)
            out = torch.full((batch,), -1, dtype=torch.int64, device=device)
            with use_backend(backend):
                got = sample_tokens(logits, temperature, seed=5, offset=9, saguaro_x=sag, saguaro_f=2, out=out,
                                    **kwargs)
            assert got is out
            greedy = temperature == 0
            torch.testing.assert_close(got[greedy].cpu(), logits.float().argmax(-1)[greedy].cpu(), atol=0, rtol=0)
            assert_rows_match(got, expected, backend)
            probs = ref.probs_from_logits(logits, temperature, kwargs["top_k"], kwargs["top_p"], sag, 2)
            assert (probs.gather(-1, got[:, None]) > 0).all(), "sampled a zero-probability token"


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_probs_from_logits_and_saguaro_rescale(backend, device):
    skip_triton_cuda(backend, device, "filtering")
    gen = torch.Generator().manual_seed(12)
    vocab = 37 if device == "cpu" else 128256
    batch = 4
    logits = logits_for(device, batch, vocab, gen=gen)
    temperature = torch.tensor([0.0, 0.7, 1.0, 1.6], device=device)
    top_k, top_p = filters(batch, device)
    x = torch.tensor([0.5, 0.2, 1.0, 0.05], device=device)
    for args in [(None, None, None), (top_k, top_p, x)]:
        expected = ref.probs_from_logits(logits, temperature, *args, saguaro_f=3)
        with use_backend(backend):
            got = probs_from_logits(logits, temperature, args[0], args[1], saguaro_x=args[2], saguaro_f=3)
        torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-4)
        assert ((got == 0) == (expected == 0)).all(), "different supports"
    probs = torch.softmax(logits, -1)
    with use_backend(backend):
        got = saguaro_rescale(probs, x, 2)
    torch.testing.assert_close(got, ref.saguaro_rescale(probs, x, 2), atol=2e-6, rtol=1e-4)
    top3 = probs.topk(3, dim=-1).indices
    ratio = got.gather(-1, top3) / probs.gather(-1, top3)
    others = torch.ones_like(probs, dtype=torch.bool).scatter_(-1, top3, False)
    other_ratio = (got[others] / probs[others]).view(batch, -1)[:, :1]
    torch.testing.assert_close(ratio / other_ratio, x[:, None].expand(-1, 3), rtol=1e-4, atol=0)


# ---------------------------------------------------------------- chain verification
def chain_inputs(device: str, batch: int, k: int, vocab: int, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator(device).manual_seed(seed)
    target = (torch.randn(batch, k + 1, vocab, generator=gen, device=device) * 2).to(dtype)
    draft = (target[:, :k].float() + torch.randn(batch, k, vocab, generator=gen, device=device) * 0.5).to(dtype)
    ids = torch.randint(0, vocab, (batch, k), generator=gen, device=device)
    # make a realistic mix: some rows accept a few argmax tokens
    greedy = target[:, :k].float().argmax(-1)
    keep = torch.rand(batch, k, generator=gen, device=device) < 0.7
    ids = torch.where(keep, greedy, ids)
    return target, draft, ids


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_verify_chain_greedy_exact(backend, device):
    shapes = [(3, 4, 37), (2, 0, 37)] if device == "cpu" else [(1, 6, 128256), (16, 4, 151936), (64, 8, 4099),
                                                               (5, 0, 300)]
    for batch, k, vocab in shapes:
        for dtype in ([torch.float32] if device == "cpu" else [torch.float32, torch.bfloat16]):
            target, _, ids = chain_inputs(device, batch, k, vocab, dtype)
            expected_tokens, expected_len = ref.verify_chain(target, ids, None)
            out_tokens = torch.full((batch, k + 1), -5, dtype=torch.int32, device=device)
            with use_backend(backend):
                tokens, length = verify_chain(target, ids.int(), out_tokens=out_tokens)
            assert tokens is out_tokens
            torch.testing.assert_close(tokens.cpu(), expected_tokens.cpu(), atol=0, rtol=0)
            torch.testing.assert_close(length.cpu(), expected_len.cpu(), atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("draft_kind", ["logits", "probs", "saguaro_filters"])
def test_verify_chain_stochastic_matches_reference(backend, device, draft_kind):
    if draft_kind != "logits":
        skip_triton_cuda(backend, device, "draft probabilities and filtering")
    shapes = [(4, 3, 37)] if device == "cpu" else [(1, 6, 128256), (16, 4, 151936), (64, 6, 5000)]
    for batch, k, vocab in shapes:
        target, draft, ids = chain_inputs(device, batch, k, vocab, seed=batch)
        temperature = torch.tensor([0.0, 0.6, 1.0, 1.5] * (batch // 4 + 1), device=device)[:batch]
        kwargs = {}
        if draft_kind == "probs":
            kwargs["draft_probs"] = torch.softmax(draft.float(), -1)
        else:
            kwargs["draft_logits"] = draft
        if draft_kind == "saguaro_filters":
            kwargs["top_k"], kwargs["top_p"] = filters(batch, device)
            kwargs["saguaro_x"], kwargs["saguaro_f"] = torch.full((batch,), 0.4, device=device), 2
        expected_tokens, expected_len = ref.verify_chain(target, ids, temperature, seed=3, offset=77, **kwargs)
        with use_backend(backend):
            tokens, length = verify_chain(target, ids, temperature, seed=3, offset=77, **kwargs)
        assert_rows_match(torch.cat([tokens, length[:, None]], 1), torch.cat([expected_tokens, expected_len[:, None]], 1),
                          backend)
        if backend == "cuda":  # deterministic for a (seed, offset)
            again = verify_chain(target, ids, temperature, seed=3, offset=77, **kwargs)
            torch.testing.assert_close(again[0], tokens, atol=0, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("draft_kind", ["logits", "probs"])
def test_verify_chain_many_requests(draft_kind):
    """Hundreds of requests (a statistics grid of more CTAs than are resident, sample CTAs waiting on
    per-request counts), greedy and sampled requests mixed; greedy-only calls are exact."""
    batch, k, vocab = 300, 3, 3000
    target, draft, ids = chain_inputs("cuda", batch, k, vocab, torch.bfloat16, seed=11)
    temperature = torch.tensor([0.0, 0.7, 1.0, 1.3] * (batch // 4), device="cuda")
    kwargs = {"draft_probs": torch.softmax(draft.float(), -1)} if draft_kind == "probs" else {"draft_logits": draft}
    expected_tokens, expected_len = ref.verify_chain(target, ids, temperature, seed=8, offset=5, **kwargs)
    tokens, length = verify_chain(target, ids, temperature, seed=8, offset=5, **kwargs)
    assert_rows_match(torch.cat([tokens, length[:, None]], 1), torch.cat([expected_tokens, expected_len[:, None]], 1),
                      "cuda")
    greedy = temperature == 0
    torch.testing.assert_close(tokens[greedy], expected_tokens[greedy].to(tokens.dtype), atol=0, rtol=0)
    expected_tokens, expected_len = ref.verify_chain(target, ids, None)
    tokens, length = verify_chain(target, ids, None)
    torch.testing.assert_close(tokens.cpu(), expected_tokens.cpu().to(tokens.dtype), atol=0, rtol=0)
    torch.testing.assert_close(length.cpu(), expected_len.cpu().to(length.dtype), atol=0, rtol=0)


def cuda_kernel_names(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA}


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,vocab", [(torch.bfloat16, 128256), (torch.float32, 32000), (torch.float16, 4000)])
def test_verify_chain_single_request_one_launch(dtype, vocab):
    """A single stochastic request with draft logits takes one launch (every row's vocabulary slice resident
    in shared memory, a grid barrier between statistics and decisions): K = 6 and 3 sampled, K = 4 greedy,
    48 offsets each against the reference; greedy rows exact; deterministic per offset."""
    batch = 1
    for k, t in [(6, 0.8), (3, 1.3), (4, 0.0)]:
        target, draft, ids = chain_inputs("cuda", batch, k, vocab, dtype, seed=20 + k)
        temperature = torch.tensor([t], device="cuda")

        def call(offset):
            return verify_chain(target, ids, temperature, draft_logits=draft, seed=5, offset=offset)

        assert any("chain_resident_kernel" in name for name in cuda_kernel_names(lambda: call(0))), \
            f"K={k} {dtype} V={vocab} did not take the one-launch path"
        got, expected = [], []
        for offset in range(48):
            tokens, length = call(offset)
            ref_tokens, ref_len = ref.verify_chain(target, ids, temperature, draft_logits=draft, seed=5, offset=offset)
            got.append(torch.cat([tokens, length[:, None]], 1).cpu())
            expected.append(torch.cat([ref_tokens, ref_len[:, None]], 1).cpu().to(torch.int32))
        got, expected = torch.cat(got), torch.cat(expected)
        assert_rows_match(got, expected, "cuda")
        greedy = (temperature == 0).cpu().repeat(48)
        torch.testing.assert_close(got[greedy], expected[greedy], atol=0, rtol=0)
        again = torch.cat([t.cpu() for t in (call(47)[0], call(47)[1][:, None])], 1)
        torch.testing.assert_close(again, got[-batch:], atol=0, rtol=0)


@pytest.mark.cuda
def test_verify_chain_single_request_distribution():
    """The one-launch path's emitted tokens follow the target: 8192 single-request calls (K = 3, 128k vocab,
    bf16, fresh offsets): out[0] ~ p_0, and out[1] ~ p_1 given that the first draft token was accepted."""
    vocab, n, bound = stat_cases("cuda")
    k, batch, temperature = 3, 1, 0.9
    gen = torch.Generator().manual_seed(71)
    target_rows = concentrated_logits(k + 1, vocab, gen, "cuda").to(torch.bfloat16)
    draft_rows = (target_rows[:k].float().cpu() + torch.randn(k, vocab, generator=gen) * 1.5).to("cuda", torch.bfloat16)
    temp = torch.full((batch,), temperature, device="cuda")
    q = ref.probs_from_logits(draft_rows, temp[:1].expand(k))
    p = ref.probs_from_logits(target_rows, temp[:1].expand(k + 1))
    ids = torch.multinomial(q, n, replacement=True, generator=torch.Generator("cuda").manual_seed(3)).T.contiguous()
    target = target_rows[None].expand(batch, -1, -1).contiguous()
    draft = draft_rows[None].expand(batch, -1, -1).contiguous()
    assert any("chain_resident_kernel" in name
               for name in cuda_kernel_names(lambda: verify_chain(target, ids[:batch], temp, draft_logits=draft)))
    outs = [verify_chain(target, ids[i:i + batch], temp, draft_logits=draft, seed=9, offset=i)
            for i in range(0, n, batch)]
    assert_chain_follows_target(outs, p, n, bound)


@pytest.mark.cuda
def test_verify_chain_concurrent_streams():
    """Two calls running at once on two streams share no device state (each call's first kernel zeroes
    the control words in its own workspace): both give what they give alone."""
    batch, k, vocab = 64, 6, 32000
    calls = [chain_inputs("cuda", batch, k, vocab, torch.bfloat16, seed=s) for s in (1, 2)]
    temperature = torch.ones(batch, device="cuda")
    alone = [verify_chain(t, i, temperature, draft_logits=d, seed=4) for t, d, i in calls]
    streams = [torch.cuda.Stream() for _ in calls]
    torch.cuda.synchronize()
    for _ in range(5):
        together = []
        for stream, (t, d, i) in zip(streams, calls):
            with torch.cuda.stream(stream):
                together.append(verify_chain(t, i, temperature, draft_logits=d, seed=4))
        torch.cuda.synchronize()
        for (tokens, length), (tokens1, length1) in zip(together, alone):
            torch.testing.assert_close(tokens, tokens1, atol=0, rtol=0)
            torch.testing.assert_close(length, length1, atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_verify_chain_k0_samples_one_token(backend, device):
    """K = 0 is plain sampling of the bonus token: [B, 1] out_tokens, accept_len 0, no draft needed."""
    skip_triton_cuda(backend, device, "K = 0")
    batch, vocab = (4, 37) if device == "cpu" else (16, 128256)
    target, _, ids = chain_inputs(device, batch, 0, vocab, seed=5)
    temperature = torch.tensor([0.0, 0.6, 1.0, 1.5] * (batch // 4), device=device)
    p = ref.probs_from_logits(target[:, 0], temperature)
    rows = torch.arange(batch, device=device)
    expected = torch.where(temperature > 0, ref.race_sample(p, p, rows, 6, 2), target[:, 0].float().argmax(-1))
    ref_tokens, ref_len = ref.verify_chain(target, ids, temperature, seed=6, offset=2)
    torch.testing.assert_close(ref_tokens[:, 0].long(), expected, atol=0, rtol=0)
    with use_backend(backend):
        tokens, length = verify_chain(target, ids, temperature, seed=6, offset=2)
    assert tokens.shape == (batch, 1) and (length == 0).all()
    assert_rows_match(tokens, ref_tokens, backend)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_chain_speculative_sampling_dropin(backend, device):
    skip_triton_cuda(backend, device, "the probability path")
    batch, k, vocab = (3, 4, 37) if device == "cpu" else (16, 6, 128256)
    target, draft, ids = chain_inputs(device, batch, k, vocab)
    p, q = torch.softmax(target, -1), torch.softmax(draft, -1)
    expected = ref.chain_speculative_sampling(q, ids, p, 21, 4)
    accepted = torch.full((batch,), 2, dtype=torch.int32, device=device)
    with use_backend(backend):
        tokens, acc, emitted = chain_speculative_sampling(q, ids.int(), p, accepted, None, seed=21, offset=4)
    assert acc is accepted
    assert_rows_match(torch.cat([tokens, acc[:, None] - 2, emitted[:, None]], 1),
                      torch.cat([expected[0], expected[1][:, None], expected[2][:, None]], 1), backend)
    assert (emitted <= acc - 2).all()  # independent tests pass at least the accepted prefix


@pytest.mark.cuda
def test_chain_speculative_sampling_matches_flashinfer_semantics():
    flashinfer = pytest.importorskip("flashinfer", reason="flashinfer not installed")
    # The docstring example: token 2 accepted, then a rejection that must resample token 0 (the only
    # token where p > q); the last slot is padding.
    draft_probs = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.1]]], device="cuda")
    target_probs = torch.tensor([[[0.0, 0.1, 0.6, 0.3], [1.0, 0.0, 0.0, 0.0], [0.7, 0.1, 0.1, 0.1]]], device="cuda")
    draft_ids = torch.tensor([[2, 1]], dtype=torch.int32, device="cuda")
    fi = flashinfer.sampling.chain_speculative_sampling(draft_probs, draft_ids, target_probs)
    ours = chain_speculative_sampling(draft_probs, draft_ids, target_probs, seed=0, offset=0)
    assert ours[0].tolist() == [[2, 0, -1]] == fi[0].tolist()
    assert ours[2].tolist() == fi[2].tolist() == [1]


# ---------------------------------------------------------------- tree verification
def tree_batch(device, trees, vocab, gen, dtype=torch.float32, match=0.6):
    """Random logits and node tokens; children of a node are distinct tokens, the first often the argmax."""
    parents = torch.tensor(sum(trees, []), dtype=torch.int32)
    sizes = [len(t) for t in trees]
    qo_indptr = torch.tensor([0] + torch.tensor(sizes).cumsum(0).tolist(), dtype=torch.int32)
    n_total = parents.numel()
    logits = torch.randn(n_total, vocab, generator=device_generator(gen, device), device=device) * 2
    best = logits.argmax(-1).tolist()
    tokens = torch.zeros(n_total, dtype=torch.int64)
    for b, tree in enumerate(trees):
        start = int(qo_indptr[b])
        for node in range(len(tree)):
            kids = [c for c in range(len(tree)) if tree[c] == node]
            picked = torch.randint(vocab, (len(kids),), generator=gen).tolist()
            while len(set(picked)) < len(kids):  # distinct siblings (at most 3 of them: random_tree's fan-out)
                picked = torch.randint(vocab, (len(kids),), generator=gen).tolist()
            if kids and torch.rand(1, generator=gen).item() < match and best[start + node] not in picked:
                picked[int(torch.randint(len(kids), (1,), generator=gen))] = best[start + node]
            for c, tok in zip(kids, picked):
                tokens[start + c] = tok
    return logits.to(dtype), tokens.to(device), parents.to(device), qo_indptr.to(device)


def random_tree(n, gen, fanout=3):
    return [-1] + [int(torch.randint(max(0, i - fanout), i, (1,), generator=gen)) for i in range(1, n)]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_verify_tree_hand_built(backend, device):
    # root 0 -> {1, 2}; 1 -> {3}; 2 -> {4, 5}. Target argmax: row 0 -> token of node 2, row 2 -> token of
    # node 5, row 5 -> 9 (bonus). Greedy walk: 0 -> 2 -> 5, bonus 9.
    vocab = 16
    parents = torch.tensor([-1, 0, 0, 1, 2, 2], dtype=torch.int32, device=device)
    tokens = torch.tensor([0, 3, 4, 5, 6, 7], device=device)
    logits = torch.zeros(6, vocab, device=device)
    logits[0, 4] = logits[2, 7] = logits[5, 9] = logits[1, 1] = logits[3, 2] = logits[4, 2] = 5.0
    qo_indptr = torch.tensor([0, 6], dtype=torch.int32, device=device)
    with use_backend(backend):
        length, nodes, out = verify_tree(logits, tokens, parents, qo_indptr, 4)
    assert length.tolist() == [2]
    assert nodes.tolist() == [[0, 2, 5, -1, -1]]
    assert out.tolist() == [[4, 7, 9, -1, -1]]
    with use_backend(backend):  # max_depth stops the walk: the bonus comes from the last accepted node
        length, nodes, out = verify_tree(logits, tokens, parents, qo_indptr, 1)
    assert nodes.tolist() == [[0, 2]] and out.tolist() == [[4, 7]]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("stochastic", [False, True])
def test_verify_tree_matches_reference(backend, device, stochastic):
    gen = torch.Generator().manual_seed(31)
    if device == "cpu":
        trees, vocab, depth = [random_tree(9, gen), random_tree(1, gen), random_tree(6, gen)], 29, 4
    else:
        trees, vocab, depth = [random_tree(int(torch.randint(1, 64, (1,), generator=gen)), gen)
                               for _ in range(24)], 128256, 8
    logits, tokens, parents, qo_indptr = tree_batch(device, trees, vocab, gen)
    batch = len(trees)
    temperature = torch.tensor([0.0, 0.8, 1.3] * batch, device=device)[:batch] if stochastic else None
    expected = ref.verify_tree(logits, tokens, parents, qo_indptr, temperature, depth, seed=8, offset=2)
    with use_backend(backend):
        got = verify_tree(logits, tokens, parents, qo_indptr, depth, temperature, seed=8, offset=2)
    assert_rows_match(torch.cat([got[0][:, None], got[1], got[2]], 1),
                      torch.cat([expected[0][:, None], expected[1], expected[2]], 1), backend)


def sgl_layout(trees, tokens, argmax):
    """sgl-kernel's retrive_* arrays for padded trees (node 0 = root), flat indices b * num_draft + i."""
    batch, num_draft = len(trees), max(len(t) for t in trees)
    cand = torch.zeros(batch, num_draft, dtype=torch.int64)
    ridx = torch.zeros(batch, num_draft, dtype=torch.int64)
    nxt = torch.full((batch, num_draft), -1, dtype=torch.int64)
    sib = torch.full((batch, num_draft), -1, dtype=torch.int64)
    target = torch.zeros(batch, num_draft, dtype=torch.int64)
    start = 0
    for b, tree in enumerate(trees):
        for i, p in enumerate(tree):
            cand[b, i] = tokens[start + i]
            ridx[b, i] = b * num_draft + i
            target[b, i] = argmax[start + i]
            if p >= 0:
                kids = [c for c in range(len(tree)) if tree[c] == p]
                if kids[0] == i:
                    nxt[b, p] = i
                pos = kids.index(i)
                sib[b, i] = kids[pos + 1] if pos + 1 < len(kids) else -1
        start += len(tree)
    return cand, ridx, nxt, sib, target


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_verify_tree_greedy_sgl_dropin(backend, device):
    gen = torch.Generator().manual_seed(41)
    trees = [random_tree(n, gen) for n in ([7, 12, 1, 5] if device == "cpu" else [64, 7, 33, 1, 20] * 8)]
    logits, tokens, parents, qo_indptr = tree_batch("cpu", trees, 50, gen, match=0.9)
    argmax = logits.argmax(-1)
    cand, ridx, nxt, sib, target = sgl_layout(trees, tokens, argmax)
    batch, num_draft = cand.shape
    num_spec = 6
    outs = [torch.full((batch * num_draft,), -1, dtype=torch.int32), torch.full((batch, num_spec), -1, dtype=torch.int32),
            torch.full((batch,), -1, dtype=torch.int32)]
    expected = [t.clone() for t in outs]
    ref.verify_tree_greedy_sgl(*expected, cand, ridx, nxt, sib, target)
    got = [t.to(device) for t in outs]
    with use_backend(backend):
        verify_tree_greedy(*got, *(t.to(device) for t in (cand, ridx, nxt, sib, target)))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.cpu(), e, atol=0, rtol=0)
    # and the same answer as the fused greedy tree verification on our tree format
    length, nodes, _ = ref.verify_tree(logits, tokens, parents, qo_indptr, None, num_spec - 1)
    torch.testing.assert_close(expected[2], length, atol=0, rtol=0)


# ---------------------------------------------------------------- statistics: emitted tokens ~ target
def stat_cases(device):
    """(vocab, samples, tv bound) — the vocabularies are small on CPU; on the GPU a 128k vocabulary whose
    mass sits on a few dozen tokens (the rest is bucketed)."""
    return (16, 20000, 0.025) if device == "cpu" else (128256, 8192, 0.05)


def bucketed(samples: torch.Tensor, probs: torch.Tensor, top: int = 48):
    """Map samples / probs onto the `top` most likely tokens plus one bucket for the rest."""
    top = min(top, probs.numel())
    order = probs.argsort(descending=True)
    keep = order[:top]
    index = torch.full((probs.numel(),), top, dtype=torch.long, device=probs.device)
    index[keep] = torch.arange(top, device=probs.device)
    merged = torch.zeros(top + 1, dtype=torch.float64, device=probs.device)
    merged.index_add_(0, index, probs.double())
    return index[samples.long()], merged


def stat_backends():
    return [pytest.param("torch", "cpu", marks=pytest.mark.cpu, id="torch-cpu"),
            pytest.param("cuda", "cuda", marks=pytest.mark.cuda, id="cuda")]


def concentrated_logits(rows, vocab, gen, device):
    logits = torch.randn(rows, vocab, generator=gen) - 4.0
    hot = torch.randperm(vocab, generator=gen)[:min(24, vocab)]
    logits[:, hot] += torch.randn(rows, hot.numel(), generator=gen) * 1.5 + 6.0
    return logits.to(device)


@pytest.mark.parametrize("backend,device", stat_backends())
@pytest.mark.parametrize("temperature,variant", [(0.6, "plain"), (1.0, "filters"), (1.7, "saguaro")])
def test_sample_tokens_distribution(backend, device, temperature, variant):
    vocab, n, bound = stat_cases(device)
    gen = torch.Generator().manual_seed(51)
    row = concentrated_logits(1, vocab, gen, device)
    logits = row.expand(n, vocab)  # n replicas (stride 0): n independent Philox rows
    temp = torch.full((n,), temperature, device=device)
    top_k = torch.full((n,), 12, dtype=torch.int32, device=device) if variant == "filters" else None
    top_p = torch.full((n,), 0.9, device=device) if variant == "filters" else None
    sag = torch.full((n,), 0.3, device=device) if variant == "saguaro" else None
    with use_backend(backend):
        samples = sample_tokens(logits, temp, top_k, top_p, seed=1, offset=5, saguaro_x=sag, saguaro_f=2)
    probs = ref.probs_from_logits(row, temp[:1], top_k[:1] if top_k is not None else None,
                                  top_p[:1] if top_p is not None else None, sag[:1] if sag is not None else None, 2)[0]
    assert (probs[samples] > 0).all(), "a zero-probability token was emitted"
    s, p = bucketed(samples, probs)
    assert total_variation(s, p) < bound


def assert_chain_follows_target(outs, p, n, bound):
    """outs: verify_chain results; out[0] ~ p_0, and out[1] ~ p_1 where the first draft token was accepted."""
    tokens = torch.cat([t for t, _ in outs])
    length = torch.cat([n_ for _, n_ in outs])
    first = tokens[:, 0]
    assert (p[0][first] > 0).all(), "a zero-probability token was emitted"
    s, pp = bucketed(first, p[0])
    assert total_variation(s, pp) < bound
    second = tokens[length >= 1, 1]
    assert second.numel() > n // 10
    s, pp = bucketed(second, p[1])
    assert total_variation(s, pp) < bound * (n / second.numel()) ** 0.5


@pytest.mark.parametrize("backend,device", stat_backends())
@pytest.mark.parametrize("temperature,variant", [(0.7, "logits"), (1.0, "probs"), (1.4, "saguaro"),
                                                 (0.9, "filters")])
def test_verify_chain_distribution(backend, device, temperature, variant):
    """Position-independent target / draft distributions: out[0] ~ p_0, and out[1] ~ p_1 given that the
    first draft token was accepted, whatever q is (draft tokens sampled from the draft distribution)."""
    vocab, n, bound = stat_cases(device)
    k = 3
    gen = torch.Generator().manual_seed(61)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16  # (halves the replicated rows' memory)
    target_rows = concentrated_logits(k + 1, vocab, gen, device).to(dtype)
    draft_rows = (target_rows[:k].float().cpu() + torch.randn(k, vocab, generator=gen) * 1.5).to(device, dtype)
    temp1 = torch.full((1,), temperature, device=device)
    top_k = torch.full((1,), 10, dtype=torch.int32, device=device) if variant == "filters" else None
    top_p = torch.full((1,), 0.85, device=device) if variant == "filters" else None
    sag = torch.full((1,), 0.25, device=device) if variant == "saguaro" else None
    rows_k = lambda t: None if t is None else t.expand(k)  # noqa: E731
    q = ref.probs_from_logits(draft_rows, temp1.expand(k), rows_k(top_k), rows_k(top_p), rows_k(sag), 2)
    p = ref.probs_from_logits(target_rows, temp1.expand(k + 1), top_k.expand(k + 1) if top_k is not None else None,
                              top_p.expand(k + 1) if top_p is not None else None)
    batch = n // 4
    outs = []
    for rep in range(4):
        ids = torch.multinomial(q, batch, replacement=True, generator=torch.Generator(device).manual_seed(rep)).T
        target = target_rows[None].expand(batch, -1, -1).contiguous()
        expand = lambda t: None if t is None else t.expand(batch).contiguous()  # noqa: E731
        kwargs = dict(top_k=expand(top_k), top_p=expand(top_p))
        if variant == "probs":
            kwargs["draft_probs"] = q[None].expand(batch, -1, -1).contiguous()
        else:
            kwargs["draft_logits"] = draft_rows[None].expand(batch, -1, -1).contiguous()
            kwargs["saguaro_x"], kwargs["saguaro_f"] = expand(sag), 2
        with use_backend(backend):
            tokens, length = verify_chain(target, ids.contiguous(), temp1.expand(batch).contiguous(), seed=9,
                                          offset=rep, **kwargs)
        outs.append((tokens, length))
    assert_chain_follows_target(outs, p, n, bound)


@pytest.mark.parametrize("backend,device", stat_backends())
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_verify_tree_distribution(backend, device, temperature):
    """Deterministic candidates, tried in a scrambled order: root child c is accepted with probability
    p_root(c), the first emitted token ~ p_root, and after accepting child 1 the next token ~ p_1.

    The logits are scaled by T, so p is the same at every temperature (same statistical power; a kernel
    that skipped or doubled the temperature would sample softmax(sharpness * T * l) or its T^-2 version,
    TV >= 0.28 here). Unscaled, a 128k vocabulary at T = 2 puts 99% of the mass in the tail and the first
    candidate gets p = 0.001: too few acceptances to test anything."""
    vocab, n, bound = (16, 4000, 0.056) if device == "cpu" else (128256, 4096, 0.05)
    sharpness = 0.6 if device == "cpu" else 1.4  # the three candidates hold ~0.7-0.8 of the root's mass
    gen = torch.Generator().manual_seed(71)
    tree = [-1, 0, 0, 0, 1, 1, 2]
    rows = concentrated_logits(len(tree), vocab, gen, device) * (sharpness * temperature)
    rows = rows.to(torch.float32 if device == "cpu" else torch.bfloat16)
    temp = torch.full((n,), temperature, device=device)
    root_p, p1 = ref.probs_from_logits(rows[:2], temp[:2])
    likely = root_p.argsort(descending=True)[:3]
    tokens = torch.tensor([0, int(likely[0]), int(likely[2]), int(likely[1]), 5, 6, 7], device=device)
    logits = rows.repeat(n, 1)
    parents = torch.tensor(tree * n, dtype=torch.int32, device=device)
    qo_indptr = torch.arange(0, n * len(tree) + 1, len(tree), dtype=torch.int32, device=device)
    with use_backend(backend):
        length, nodes, out = verify_tree(logits, tokens.repeat(n), parents, qo_indptr, 2, temp, seed=2, offset=0)
    for child in (1, 2, 3):  # P(accept child c) = p(c) whatever the order tried: 5 sigma binomial bound
        pc = root_p[tokens[child]].item()
        rate = (nodes[:, 1] == child).float().mean().item()
        assert abs(rate - pc) < 5 * (pc * (1 - pc) / n) ** 0.5, f"child {child}: accepted {rate:.4f}, p = {pc:.4f}"
    s, pp = bucketed(out[:, 0], root_p)
    assert total_variation(s, pp) < bound
    child = nodes[:, 1] == 1
    s, pp = bucketed(out[child, 1], p1)
    assert total_variation(s, pp) < bound * (n / child.sum().item()) ** 0.5


@pytest.mark.parametrize("backend,device", stat_backends())
def test_zero_probability_tokens_never_emitted(backend, device):
    vocab = 16 if device == "cpu" else 128256
    gen = torch.Generator().manual_seed(81)
    batch, k = (2048, 4) if device == "cpu" else (512, 4)
    data_gen = device_generator(gen, device)
    target = torch.randn(batch, k + 1, vocab, generator=data_gen, device=device)
    banned = torch.randperm(vocab, generator=gen)[: vocab // 2]
    target[..., banned.to(device)] = float("-inf")
    draft = torch.randn(batch, k, vocab, generator=data_gen, device=device)  # proposes banned tokens too
    q = torch.softmax(draft, -1)
    ids = torch.multinomial(q.view(-1, vocab), 1, generator=torch.Generator(device).manual_seed(0)).view(batch, k)
    with use_backend(backend):
        tokens, length = verify_chain(target, ids, torch.ones(batch, device=device), draft_logits=draft, seed=4)
        sampled = sample_tokens(target[:, 0], torch.full((batch,), 2.0, device=device), seed=4)
    emitted = torch.cat([tokens[tokens >= 0], sampled])
    assert not torch.isin(emitted, banned.to(device)).any()


# ---------------------------------------------------------------- graphs, compile, opcheck, bad inputs
@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("batch", [1, 8])  # 1: the one-launch path
def test_cuda_graph_replays_draw_fresh_numbers(backend, batch):
    k, vocab = 4, 32000
    target, draft, ids = chain_inputs("cuda", batch, k, vocab)
    temperature = torch.ones(batch, device="cuda")
    offset = torch.zeros(1, dtype=torch.int64, device="cuda")
    out_tokens = torch.empty(batch, k + 1, dtype=torch.int32, device="cuda")
    accept_len = torch.empty(batch, dtype=torch.int32, device="cuda")

    def step():
        verify_chain(target, ids, temperature, draft_logits=draft, seed=5, offset=offset, out_tokens=out_tokens,
                     accept_len=accept_len)
        offset.add_(1)

    with use_backend(backend):
        step()  # warm up (Triton compiles outside the capture)
        offset.zero_()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    offset.zero_()
    results = []
    for replay in range(3):
        graph.replay()
        torch.cuda.synchronize()
        results.append(out_tokens.clone())
        expected, _ = ref.verify_chain(target, ids, temperature, draft_logits=draft, seed=5, offset=replay)
        assert_rows_match(out_tokens, expected, "cuda")
    assert not torch.equal(results[0], results[1]) or not torch.equal(results[1], results[2])


@pytest.mark.cuda
def test_opcheck():
    batch, k, vocab = 4, 3, 1000
    target, draft, ids = chain_inputs("cuda", batch, k, vocab)
    temperature = torch.ones(batch, device="cuda")
    out = torch.empty(batch, dtype=torch.int64, device="cuda")
    torch.library.opcheck(torch.ops.ssdk.sample_tokens.default,
                          (out, target[:, 0], temperature, None, None, None, 0, 1, 2, None))
    torch.library.opcheck(torch.ops.ssdk.verify_chain.default,
                          (torch.empty(batch, k + 1, dtype=torch.int32, device="cuda"),
                           torch.empty(batch, dtype=torch.int32, device="cuda"), target, ids, draft, None, temperature,
                           None, None, None, 0, 1, 2, None))


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.cpu),
                                    pytest.param("cuda", marks=pytest.mark.cuda)])
def test_torch_compile_fullgraph(device):
    logits = logits_for(device, 4, 100)
    temperature = torch.tensor([0.0, 1.0, 0.5, 2.0], device=device)

    def sample_plus_one(x, t):
        return sample_tokens(x, t, seed=3, offset=1) + 1

    compiled = torch.compile(sample_plus_one, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
    torch.testing.assert_close(compiled(logits, temperature), sample_plus_one(logits, temperature))


@pytest.mark.cpu
def test_bad_inputs_name_the_argument():
    logits = torch.randn(2, 10)
    t = torch.ones(2)
    with pytest.raises(TypeError, match="temperature has dtype torch.float64"):
        sample_tokens(logits, t.double())
    with pytest.raises(ValueError, match="top_k must have shape \\(2,\\)"):
        sample_tokens(logits, t, top_k=torch.ones(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="seed must be an int"):
        sample_tokens(logits, t, seed=-1)
    with pytest.raises(ValueError, match="offset must be a non-negative int or an int64 tensor"):
        sample_tokens(logits, t, offset=1.5)
    with pytest.raises(ValueError, match="saguaro_f must be an int in \\[0, vocab\\)"):
        sample_tokens(logits, t, saguaro_x=t, saguaro_f=10)
    target = torch.randn(2, 4, 10)
    draft = torch.randn(2, 3, 10)
    ids = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="draft_token_ids must have shape \\(2, 3\\)"):
        verify_chain(target, ids[:, :2])
    with pytest.raises(ValueError, match="needs draft_logits or draft_probs"):
        verify_chain(target, ids, t)
    with pytest.raises(ValueError, match="pass draft_logits or draft_probs, not both"):
        verify_chain(target, ids, t, draft_logits=draft, draft_probs=draft)
    with pytest.raises(TypeError, match="draft_probs has dtype torch.float16"):
        verify_chain(target, ids, t, draft_probs=draft.half())
    with pytest.raises(ValueError, match="saguaro_x rescales draft_logits"):
        verify_chain(target, ids, t, draft_probs=torch.softmax(draft, -1), saguaro_x=t)
    with pytest.raises(ValueError, match="max_depth must be a non-negative int"):
        verify_tree(torch.randn(3, 10), torch.zeros(3, dtype=torch.int64), torch.tensor([-1, 0, 1], dtype=torch.int32),
                    torch.tensor([0, 3], dtype=torch.int32), -1)
    with pytest.raises(TypeError, match="target_probs has dtype torch.float16"):
        chain_speculative_sampling(draft, ids, target.half())
    with pytest.raises(TypeError, match="candidates has dtype torch.int32"):
        z = torch.zeros(2, 3, dtype=torch.int32)
        verify_tree_greedy(torch.zeros(6, dtype=torch.int32), z, torch.zeros(2, dtype=torch.int32), z, z, z, z, z)
