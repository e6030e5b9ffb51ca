"""tree_attention: every backend vs the fp32 reference under FlashAttention's error rule (error <= 2x the
error of same-dtype PyTorch + eps), NaN-poisoned cache slots and outputs, page boundaries, prefix 0,
tree / chain / causal masks, GQA ratios, head dims, ragged batches, KV splits, FlashInfer equality,
opcheck, torch.compile, CUDA-graph replay with new lengths, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from ssdk.ops import tree_attention, use_backend
from ssdk.ref import attention as ref

from ._params import BACKEND_DEVICES

EPS = {torch.float16: 1e-3, torch.bfloat16: 4e-3}


def random_parents(n: int, gen: torch.Generator) -> list[int]:
    """A random forest over n tokens in topological order: parent[i] in [-1, i)."""
    return [int(torch.randint(-1, i, (1,), generator=gen)) if i else -1 for i in range(n)]


def ancestor_matrix(parents: list[int]) -> torch.Tensor:
    n = len(parents)
    visible = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j >= 0:
            visible[i, j] = True
            j = parents[j]
    return visible


def make_inputs(prefixes: list[int], ns: list[int], *, num_kv_heads: int = 2, group: int = 4, head_dim: int = 64,
                dtype: torch.dtype = torch.bfloat16, device: str = "cpu", page_size: int = 16,
                mask: str = "tree", extra_words: int = 0, seed: int = 0) -> dict:
    """Paged inputs with scattered pages; every cache slot that holds no token of a request is NaN, and
    unused block-table entries point at an all-NaN page, so a read outside the valid range shows."""
    gen = torch.Generator().manual_seed(seed)
    batch, n_total = len(ns), sum(ns)
    num_qo_heads = num_kv_heads * group
    kv_lens = [p + n for p, n in zip(prefixes, ns)]
    pages = [(length + page_size - 1) // page_size for length in kv_lens]
    max_pages = max(pages + [1]) + 1
    num_pages = sum(pages) + 2  # + a NaN page for unused entries + a spare
    order = torch.randperm(num_pages - 1, generator=gen) + 1  # page 0 is the NaN page
    k_cache = torch.full((num_pages, page_size, num_kv_heads, head_dim), float("nan"))
    v_cache = torch.full_like(k_cache, float("nan"))
    block_tables = torch.zeros(batch, max_pages, dtype=torch.int32)
    used = 0
    for b, length in enumerate(kv_lens):
        block_tables[b, : pages[b]] = order[used: used + pages[b]].int()
        used += pages[b]
        pos = torch.arange(length)
        phys = block_tables[b, pos // page_size].long()
        k_cache[phys, pos % page_size] = torch.randn(length, num_kv_heads, head_dim, generator=gen)
        v_cache[phys, pos % page_size] = torch.randn(length, num_kv_heads, head_dim, generator=gen)
    q = torch.randn(n_total, num_qo_heads, head_dim, generator=gen)
    max_q_len = max(ns + [1])
    tree_mask = None
    if mask != "causal":
        words = (max_q_len + 31) // 32 + extra_words
        rows = []
        for n in ns:
            parents = random_parents(n, gen) if mask == "tree" else list(range(-1, n - 1))
            rows.append(ref.pack_ancestor_bits(ancestor_matrix(parents), words))
        tree_mask = torch.cat(rows) if rows else torch.zeros(0, words, dtype=torch.int32)
    qo_indptr = torch.tensor([0] + torch.tensor(ns).cumsum(0).tolist(), dtype=torch.int32)
    return dict(q=q.to(dtype).to(device), k_cache=k_cache.to(dtype).to(device), v_cache=v_cache.to(dtype).to(device),
                block_tables=block_tables.to(device), prefix_lens=torch.tensor(prefixes, dtype=torch.int32).to(device),
                qo_indptr=qo_indptr.to(device), tree_mask=None if tree_mask is None else tree_mask.to(device),
                max_q_len=max_q_len)


def ref_args(inp: dict) -> tuple:
    return (inp["q"], inp["k_cache"], inp["v_cache"], inp["block_tables"], inp["prefix_lens"], inp["qo_indptr"],
            inp["tree_mask"], 1.0 / math.sqrt(inp["q"].shape[-1]))


def run(inp: dict, backend: str, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.full_like(inp["q"], float("nan"))
    with use_backend(backend):
        got, lse = tree_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["block_tables"], inp["prefix_lens"],
                                  inp["qo_indptr"], inp["tree_mask"], max_q_len=inp["max_q_len"], out=out,
                                  return_lse=True, **kwargs)
    assert got is out
    return got, lse


def assert_fa_rule(out: torch.Tensor, lse: torch.Tensor, inp: dict, what: str = "") -> None:
    """FlashAttention's rule: |ours - fp32 ref| <= 2 |same-dtype torch - fp32 ref| + eps (out and lse)."""
    ref_out, ref_lse = ref.tree_attention(*ref_args(inp))
    low_out, low_lse = ref.tree_attention(*ref_args(inp), compute_dtype=inp["q"].dtype)
    eps = EPS[inp["q"].dtype]
    assert not out.isnan().any(), f"{what}: NaN in the output (unwritten row or a read outside the valid range)"
    err, base = (out.float() - ref_out).abs().max().item(), (low_out - ref_out).abs().max().item()
    assert err <= 2 * base + eps, f"{what}: out error {err:.3g} > 2 x {base:.3g} + {eps}"
    finite = ref_lse.isfinite()
    assert torch.equal(lse.isfinite(), finite), f"{what}: lse is -inf exactly where no key is visible"
    lse_err = (lse - ref_lse)[finite].abs().max().item() if finite.any() else 0.0
    lse_base = (low_lse - ref_lse)[finite].abs().max().item() if finite.any() else 0.0
    assert lse_err <= 2 * lse_base + eps, f"{what}: lse error {lse_err:.3g} > 2 x {lse_base:.3g} + {eps}"


def naive_attention(inp: dict) -> torch.Tensor:
    """Independent per-query loop (checks the reference itself): gather visible keys one by one."""
    q, k_cache, v_cache = inp["q"].float(), inp["k_cache"].float(), inp["v_cache"].float()
    page_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = q.shape[1] // num_kv_heads
    out = torch.zeros_like(q)
    indptr = inp["qo_indptr"].tolist()
    for b, prefix in enumerate(inp["prefix_lens"].tolist()):
        for i in range(indptr[b + 1] - indptr[b]):
            row = indptr[b] + i
            new = [j for j in range(i + 1)] if inp["tree_mask"] is None else [
                j for j in range(indptr[b + 1] - indptr[b])
                if (int(inp["tree_mask"][row, j // 32]) >> (j % 32)) & 1]
            positions = list(range(prefix)) + [prefix + j for j in new]
            slots = [(int(inp["block_tables"][b, p // page_size]), p % page_size) for p in positions]
            keys = torch.stack([k_cache[pg, s] for pg, s in slots])  # [L, Hkv, D]
            values = torch.stack([v_cache[pg, s] for pg, s in slots])
            for h in range(q.shape[1]):
                w = torch.softmax(keys[:, h // group] @ q[row, h] / math.sqrt(q.shape[-1]), dim=0)
                out[row, h] = w @ values[:, h // group]
    return out


@pytest.mark.cpu
@pytest.mark.parametrize("mask", ["tree", "causal"])
def test_reference_matches_naive_loop(mask):
    inp = make_inputs([0, 17, 5], [3, 9, 34], num_kv_heads=2, group=2, head_dim=64, dtype=torch.float32,
                      page_size=5, mask=mask, seed=1)
    out, _ = ref.tree_attention(*ref_args(inp))
    torch.testing.assert_close(out, naive_attention(inp), atol=1e-5, rtol=1e-5)


@pytest.mark.cpu
def test_pack_unpack_ancestor_bits_roundtrip():
    dense = torch.rand(70, 70) < 0.5
    packed = ref.pack_ancestor_bits(dense)
    assert packed.dtype == torch.int32 and packed.shape == (70, 3)
    assert torch.equal(ref.unpack_ancestor_bits(packed, 70), dense)
    assert int(ref.pack_ancestor_bits(torch.eye(32, dtype=torch.bool))[31, 0]) == -2**31  # bit 31 = sign bit


def cases(device: str) -> list[tuple[str, dict]]:
    """(id, make_inputs kwargs): small for the interpreter, the issue's grid on the GPU."""
    if device == "cpu":
        return [
            ("tree-ragged", dict(prefixes=[0, 5, 37], ns=[1, 7, 33], group=4, page_size=16)),
            ("causal-odd-pages", dict(prefixes=[3, 0], ns=[5, 18], group=1, page_size=5, mask="causal")),
            ("chain-fp16-gqa8", dict(prefixes=[20], ns=[6], num_kv_heads=1, group=8, dtype=torch.float16,
                                     mask="chain")),
        ]
    out = []
    for head_dim in (64, 128):
        for group in (1, 4, 8):
            for dtype in (torch.bfloat16, torch.float16):
                tag = f"d{head_dim}-g{group}-{str(dtype)[6:]}"
                # The n grid in one ragged batch: page-boundary prefixes, prefix 0, odd lengths.
                out.append((f"tree-ns-{tag}", dict(prefixes=[1000, 0, 65, 63, 1027], ns=[1, 7, 21, 64, 133],
                                                   head_dim=head_dim, group=group, dtype=dtype, page_size=16)))
                out.append((f"decode-{tag}", dict(prefixes=[1, 64, 127, 4000, 0, 777], ns=[1] * 6, head_dim=head_dim,
                                                  group=group, dtype=dtype, page_size=16, mask="causal")))
        out.append((f"chain-oddpage-d{head_dim}", dict(prefixes=[100, 31, 0], ns=[8, 8, 8], head_dim=head_dim,
                                                        page_size=7, mask="chain", extra_words=1)))
        out.append((f"causal-prefill-d{head_dim}", dict(prefixes=[0, 700], ns=[1500, 900], num_kv_heads=2, group=2,
                                                        head_dim=head_dim, page_size=32, mask="causal")))
    return out


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_matches_reference(backend, device):
    for name, kwargs in cases(device):
        inp = make_inputs(device=device, **kwargs)
        out, lse = run(inp, backend)
        assert_fa_rule(out, lse, inp, name)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_random_tree_fuzz(backend, device):
    trials = 3 if device == "cpu" else 40
    gen = torch.Generator().manual_seed(7)
    for trial in range(trials):
        batch = int(torch.randint(1, 4 if device == "cpu" else 9, (1,), generator=gen))
        max_n = 24 if device == "cpu" else 160
        ns = torch.randint(1, max_n, (batch,), generator=gen).tolist()
        prefixes = torch.randint(0, 60 if device == "cpu" else 2500, (batch,), generator=gen).tolist()
        kwargs = dict(num_kv_heads=int(torch.randint(1, 3, (1,), generator=gen)),
                      group=[1, 2, 4, 8][int(torch.randint(0, 4, (1,), generator=gen))],
                      head_dim=64 if device == "cpu" else [64, 128][trial % 2],
                      dtype=torch.float16 if device == "cpu" else [torch.bfloat16, torch.float16][trial % 2],
                      page_size=[1, 5, 16, 64][int(torch.randint(0, 4, (1,), generator=gen))], seed=trial)
        inp = make_inputs(prefixes, ns, device=device, **kwargs)
        out, lse = run(inp, backend)
        assert_fa_rule(out, lse, inp, f"trial {trial}: prefixes {prefixes} ns {ns} {kwargs}")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_empty_rows_and_requests(backend, device):
    # A request with no new tokens, and a query whose mask row is empty with no prefix: out 0, lse -inf.
    inp = make_inputs([0, 9, 0], [3, 0, 2], device=device, group=2, dtype=torch.float16)
    inp["tree_mask"][1] = 0
    out, lse = run(inp, backend)
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.isneginf(lse[1]).all()
    assert_fa_rule(out, lse, inp, "empty rows")
    empty = make_inputs([4], [0], device=device)
    got = tree_attention(empty["q"], empty["k_cache"], empty["v_cache"], empty["block_tables"],
                         empty["prefix_lens"], empty["qo_indptr"], max_q_len=1)
    assert got.shape == (0, 8, 64)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_strided_q_out_and_cache_views(backend, device):
    # q is a slice of a fused qkv projection, out a view into a wider buffer, k/v caches views of one
    # [pages, page_size, 2, Hkv, D] allocation (strided page and token dims).
    inp = make_inputs([30, 70], [5, 12], device=device, num_kv_heads=2, group=2, dtype=torch.float16)
    n_total, hq, d = inp["q"].shape
    qkv = torch.randn(n_total, hq + 4, d, dtype=inp["q"].dtype, device=device)
    qkv[:, :hq] = inp["q"]
    kv = torch.stack([inp["k_cache"], inp["v_cache"]], dim=2)
    strided = dict(inp, q=qkv[:, :hq], k_cache=kv[:, :, 0], v_cache=kv[:, :, 1])
    out_base = torch.full((n_total, hq + 2, d), float("nan"), dtype=inp["q"].dtype, device=device)
    out = out_base[:, 1: hq + 1]
    with use_backend(backend):
        tree_attention(strided["q"], strided["k_cache"], strided["v_cache"], inp["block_tables"], inp["prefix_lens"],
                       inp["qo_indptr"], inp["tree_mask"], max_q_len=inp["max_q_len"], out=out)
    expected, _ = ref.tree_attention(*ref_args(inp))
    low, _ = ref.tree_attention(*ref_args(inp), compute_dtype=inp["q"].dtype)
    assert (out.float() - expected).abs().max() <= 2 * (low - expected).abs().max() + EPS[torch.float16]
    assert out_base[:, 0].isnan().all() and out_base[:, -1].isnan().all(), "wrote outside the out view"


@pytest.mark.cuda
@pytest.mark.parametrize("head_dim", [64, 128])
def test_kv_splits_agree(head_dim):
    # Split-KV is a launch detail: every split count gives the reference's answer.
    inp = make_inputs([1500, 3, 64], [21, 1, 40], device="cuda", head_dim=head_dim, group=4)
    outs = []
    for splits in (1, 2, 7, 64):
        out, lse = run(inp, "cuda", num_kv_splits=splits)
        assert_fa_rule(out, lse, inp, f"num_kv_splits={splits}")
        outs.append(out.float())
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], atol=1.6e-2, rtol=1.6e-2)


# The decode kernel (max_q_len == 1, group <= 16): (batch, prefix) grid, with group / head dim / dtype /
# page size varied across cases; prefixes are ragged around L (page boundaries, prefix 0 where L = 1). B = 64
# at L >= 1000 (>= 1024 tiles over requests and kv heads) takes the kernel's wide copy layout, the rest the narrow.
DECODE_GRID = [(batch, length) for batch in (1, 3, 64) for length in (1, 17, 1000, 4096)]


@pytest.mark.cuda
@pytest.mark.parametrize("batch,length", DECODE_GRID)
def test_decode_path(batch, length):
    i = DECODE_GRID.index((batch, length))
    group, head_dim = [1, 4, 8, 5, 16, 4][i % 6], [64, 128][i % 2]
    dtype, page_size = [torch.bfloat16, torch.float16][(i // 2) % 2], [16, 16, 7, 1][i % 4]
    prefixes = [max(0, length - (b * 37) % 67) if b % 5 != 4 else length for b in range(batch)]
    prefixes[0] = length
    ns = [0 if batch > 1 and b % 3 == 1 else 1 for b in range(batch)]  # some requests without a new token
    inp = make_inputs(prefixes, ns, device="cuda", num_kv_heads=2, group=group,
                      head_dim=head_dim, dtype=dtype, page_size=page_size, mask="causal", seed=i)
    assert inp["max_q_len"] == 1
    what = f"B={batch} L={length} group={group} d={head_dim} {dtype} page={page_size}"
    general, general_lse = run(dict(inp, max_q_len=2), "cuda")  # the tree kernel on the same rows
    for splits in (0, 1, 3, 16, 41, 128):  # 41, 128 (clamped to the table's tiles): several states per merge slice
        out, lse = run(inp, "cuda", num_kv_splits=splits)
        assert_fa_rule(out, lse, inp, f"{what} splits={splits}")
        torch.testing.assert_close(out.float(), general.float(), atol=1.6e-2, rtol=1.6e-2)
        torch.testing.assert_close(lse, general_lse, atol=1e-3, rtol=1e-3)
        if splits == 128:  # the merge sums in an order fixed by the split count: the same bits every call
            again, again_lse = run(inp, "cuda", num_kv_splits=splits)
            assert torch.equal(again, out) and torch.equal(again_lse, lse), f"{what}: merge not deterministic"


@pytest.mark.cuda
@pytest.mark.parametrize("group", [4, 32])
def test_decode_tree_mask_and_wide_groups(group):
    # n = 1 with a tree mask: bit 0 cleared = the query does not see its own token (prefix 0: no key at
    # all, out 0 and lse -inf). group 32 > 16 takes the general kernel with max_q_len = 1.
    inp = make_inputs([0, 130, 64, 0, 4095], [1, 1, 1, 1, 1], device="cuda", num_kv_heads=2, group=group,
                      head_dim=128, mask="tree")
    inp["tree_mask"][0::2] = 0
    out, lse = run(inp, "cuda", num_kv_splits=8)
    assert torch.equal(out[0], torch.zeros_like(out[0])) and torch.isneginf(lse[0]).all()
    assert_fa_rule(out, lse, inp, f"decode tree mask group={group}")


@pytest.mark.cuda
def test_decode_graph_replays_with_new_lengths():
    # The merge kernel finds each request's active splits from its length on the device: replays with new
    # lengths (so a new count of active splits) stay exact; out and lse are poisoned before each replay.
    inp = make_inputs([3000, 5, 900], [1, 1, 1], device="cuda", group=4, mask="causal")
    out = torch.empty_like(inp["q"])
    lse = torch.empty(inp["q"].shape[:2], device="cuda")

    def call():
        torch.ops.ssdk.tree_attention(out, lse, inp["q"], inp["k_cache"], inp["v_cache"], inp["block_tables"],
                                      inp["prefix_lens"], inp["qo_indptr"], None, 1, 0.125, 0)

    call()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    for prefixes in ([64, 5, 0], [1, 0, 900], [2999, 3, 899], [3000, 5, 900]):  # within the cached tokens
        inp["prefix_lens"].copy_(torch.tensor(prefixes, dtype=torch.int32))
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref_out, ref_lse = ref.tree_attention(*ref_args(inp)[:-1], 0.125)
        low_out, _ = ref.tree_attention(*ref_args(inp)[:-1], 0.125, compute_dtype=torch.bfloat16)
        assert (out.float() - ref_out).abs().max() <= 2 * (low_out - ref_out).abs().max() + EPS[torch.bfloat16]
        torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-3)
    del graph


@pytest.mark.cuda
@pytest.mark.parametrize("head_dim", [64, 128])
def test_decode_matches_flashinfer_decode(head_dim):
    flashinfer = pytest.importorskip("flashinfer", reason="flashinfer not installed")
    page_size = 16
    inp = make_inputs([1024, 0, 333, 4000, 17], [1] * 5, device="cuda", num_kv_heads=8, group=4,
                      head_dim=head_dim, page_size=page_size, mask="causal")
    for key in ("k_cache", "v_cache"):  # FlashInfer may load whole last pages: no NaN poison here
        inp[key] = inp[key].nan_to_num(0.0)
    kv_indptr, kv_indices, last_page_len, _ = ref.to_flashinfer(
        inp["block_tables"], inp["prefix_lens"], inp["qo_indptr"], None, page_size)
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
        torch.empty(128 << 20, dtype=torch.uint8, device="cuda"), "NHD")
    wrapper.plan(kv_indptr, kv_indices, last_page_len, 32, 8, head_dim, page_size,
                 q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
    theirs = wrapper.run(inp["q"], (inp["k_cache"], inp["v_cache"]))
    ours, lse = run(inp, "cuda")
    assert_fa_rule(ours, lse, inp, "ssdk decode")
    torch.testing.assert_close(ours.float(), theirs.float(), atol=1.6e-2, rtol=1.6e-2)


@pytest.mark.cuda
@pytest.mark.parametrize("head_dim", [64, 128])
def test_matches_flashinfer_custom_mask(head_dim):
    flashinfer = pytest.importorskip("flashinfer", reason="flashinfer not installed")
    page_size = 16
    inp = make_inputs([1024, 0, 333, 64], [21, 7, 64, 133], device="cuda", num_kv_heads=8, group=4,
                      head_dim=head_dim, page_size=page_size)
    for key in ("k_cache", "v_cache"):  # FlashInfer may load whole last pages: no NaN poison here
        inp[key] = inp[key].nan_to_num(0.0)
    kv_indptr, kv_indices, last_page_len, custom_mask = ref.to_flashinfer(
        inp["block_tables"], inp["prefix_lens"], inp["qo_indptr"], inp["tree_mask"], page_size)
    wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(
        torch.empty(128 << 20, dtype=torch.uint8, device="cuda"), "NHD")
    wrapper.plan(inp["qo_indptr"], kv_indptr, kv_indices, last_page_len, 32, 8, head_dim, page_size,
                 custom_mask=custom_mask, q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
    theirs = wrapper.run(inp["q"], (inp["k_cache"], inp["v_cache"]))
    ours, lse = run(inp, "cuda")
    assert_fa_rule(ours, lse, inp, "ssdk")
    torch.testing.assert_close(ours.float(), theirs.float(), atol=1.6e-2, rtol=1.6e-2)


@pytest.mark.cuda
def test_opcheck():
    inp = make_inputs([40, 3], [5, 9], device="cuda", group=4)
    out = torch.empty_like(inp["q"])
    lse = torch.empty(inp["q"].shape[:2], device="cuda")
    args = (out, lse, inp["q"], inp["k_cache"], inp["v_cache"], inp["block_tables"], inp["prefix_lens"],
            inp["qo_indptr"], inp["tree_mask"], inp["max_q_len"], 0.125, 0)
    torch.library.opcheck(torch.ops.ssdk.tree_attention.default, args)


@pytest.mark.cuda
def test_torch_compile_fullgraph():
    inp = make_inputs([40, 3], [5, 9], device="cuda", group=4)

    def step(q):
        return tree_attention(q * 2, inp["k_cache"], inp["v_cache"], inp["block_tables"], inp["prefix_lens"],
                              inp["qo_indptr"], inp["tree_mask"], max_q_len=inp["max_q_len"])

    expected = step(inp["q"])
    got = torch.compile(step, fullgraph=True)(inp["q"])
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_replay_with_new_lengths(backend):
    # Nothing is baked into the graph but the launch: new prefix lengths, a new tree and new queries
    # written into the same buffers are honoured on replay.
    inp = make_inputs([700, 20], [21, 21], device="cuda", group=4)
    out = torch.empty_like(inp["q"])
    lse = torch.empty(inp["q"].shape[:2], device="cuda")

    def call():
        with use_backend(backend):
            tree_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["block_tables"], inp["prefix_lens"],
                           inp["qo_indptr"], inp["tree_mask"], max_q_len=21, out=out)

    call()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    new = make_inputs([700, 20], [21, 21], device="cuda", group=4, seed=3)
    inp["prefix_lens"].copy_(torch.tensor([650, 5], dtype=torch.int32))
    new["prefix_lens"] = inp["prefix_lens"]
    for key in ("q", "tree_mask"):
        inp[key].copy_(new[key])
    new.update(k_cache=inp["k_cache"], v_cache=inp["v_cache"], block_tables=inp["block_tables"])
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    del graph
    expected, _ = ref.tree_attention(*ref_args(new))
    low, _ = ref.tree_attention(*ref_args(new), compute_dtype=torch.bfloat16)
    assert (out.float() - expected).abs().max() <= 2 * (low - expected).abs().max() + EPS[torch.bfloat16]


@pytest.mark.cpu
def test_bad_inputs_name_the_argument():
    inp = make_inputs([4], [3])
    q, k, v, bt, pl, qi, tm = (inp[key] for key in ("q", "k_cache", "v_cache", "block_tables", "prefix_lens",
                                                     "qo_indptr", "tree_mask"))
    with pytest.raises(TypeError, match="q has dtype torch.float32"):
        tree_attention(q.float(), k, v, bt, pl, qi, tm)
    with pytest.raises(ValueError, match="head_dim must be one of"):
        tree_attention(q[..., :32], k[..., :32], v[..., :32], bt, pl, qi, tm)
    with pytest.raises(TypeError, match="k_cache has dtype torch.float16 but q"):
        tree_attention(q, k.half(), v, bt, pl, qi, tm)
    with pytest.raises(ValueError, match="v_cache must have shape"):
        tree_attention(q, k, v[:, :, :1], bt, pl, qi, tm)
    with pytest.raises(ValueError, match="num_qo_heads .8. must be a multiple of num_kv_heads .3."):
        tree_attention(q, torch.cat([k, k[:, :, :1]], 2), torch.cat([v, v[:, :, :1]], 2), bt, pl, qi, tm)
    with pytest.raises(TypeError, match="block_tables has dtype torch.int64"):
        tree_attention(q, k, v, bt.long(), pl, qi, tm)
    with pytest.raises(ValueError, match=r"qo_indptr must have shape \(2,\)"):
        tree_attention(q, k, v, bt, pl, qi[:1], tm)
    with pytest.raises(ValueError, match=r"prefix_lens must have shape \(1,\)"):
        tree_attention(q, k, v, bt, pl.repeat(2), qi, tm)
    with pytest.raises(ValueError, match="tree_mask must have shape"):
        tree_attention(q, k, v, bt, pl, qi, tm, max_q_len=33)
    with pytest.raises(TypeError, match="max_q_len must be a non-negative int"):
        tree_attention(q, k, v, bt, pl, qi, tm, max_q_len=3.0)
    with pytest.raises(ValueError, match="q must be contiguous in its last dimension"):
        tree_attention(q.transpose(1, 2).contiguous().transpose(1, 2)[:, :, :64], k, v, bt, pl, qi, tm)
    with pytest.raises(ValueError, match="out must have shape"):
        tree_attention(q, k, v, bt, pl, qi, tm, out=torch.empty_like(q[:1]))
    with pytest.raises(TypeError, match="tree_mask must be a torch.Tensor"):
        tree_attention(q, k, v, bt, pl, qi, [1, 2, 3])
    for bad_scale in (0.0, -0.125, float("nan")):
        with pytest.raises(ValueError, match="sm_scale must be positive and finite"):
            tree_attention(q, k, v, bt, pl, qi, tm, sm_scale=bad_scale)


@pytest.mark.cuda
def test_bad_inputs_cuda():
    inp = make_inputs([4], [3], device="cuda")
    q, k, v, bt, pl, qi, tm = (inp[key] for key in ("q", "k_cache", "v_cache", "block_tables", "prefix_lens",
                                                     "qo_indptr", "tree_mask"))
    with pytest.raises(ValueError, match="block_tables is on cpu but q is on cuda"):
        tree_attention(q, k, v, bt.cpu(), pl, qi, tm)
    out = torch.empty_like(q)
    # The C++ launcher checks too, for callers of torch.ops.ssdk directly.
    with pytest.raises(RuntimeError, match="k_cache must have 16-byte aligned rows"):
        k_odd = torch.empty(k.shape[0], k.shape[1], k.shape[2], 68, dtype=k.dtype, device="cuda")[..., 2:66]
        torch.ops.ssdk.tree_attention(out, None, q, k_odd, v, bt, pl, qi, tm, 3, 0.125, 0)
    with pytest.raises(RuntimeError, match="qo_indptr must have shape"):
        torch.ops.ssdk.tree_attention(out, None, q, k, v, bt, pl, qi[:1], tm, 3, 0.125, 0)
    with pytest.raises(RuntimeError, match="lse must be a contiguous"):
        torch.ops.ssdk.tree_attention(out, torch.empty(3, 4, device="cuda"), q, k, v, bt, pl, qi, tm, 3, 0.125, 0)
    with pytest.raises(RuntimeError, match="sm_scale must be positive and finite"):
        torch.ops.ssdk.tree_attention(out, None, q, k, v, bt, pl, qi, tm, 3, -0.125, 0)
    # The kernel keeps cache offsets in 32-bit strides: a page stride of 2^31 elements is refused (a
    # one-page view, so no storage of that size is needed).
    k_wide = k[:1].as_strided(k[:1].shape, (1 << 31,) + k.stride()[1:])
    with pytest.raises(RuntimeError, match="strides below 2"):
        torch.ops.ssdk.tree_attention(out, None, q, k_wide, k_wide, bt, pl, qi, tm, 3, 0.125, 0)
