"""Batch-invariant ops: results vs fp32 references, and the property itself: a row computed alone, inside a
bigger batch, or (attention) as a decode vs as a row of a verify chain gives the same bits."""

from __future__ import annotations

import math

import pytest
import torch
from ssdk.ops import (
    batch_invariant_attention,
    batch_invariant_linear,
    fused_add_rmsnorm,
    rmsnorm,
    use_backend,
)
from ssdk.ref import attention as ref
from ssdk.testing.tolerances import assert_close, poison_

from .test_tree_attention import make_inputs, ref_args

BACKENDS = [
    pytest.param("torch", "cpu", marks=pytest.mark.cpu, id="torch-cpu"),
    pytest.param("triton", "cpu", marks=pytest.mark.triton_interp, id="triton-interp"),
    pytest.param("triton", "cuda", marks=pytest.mark.cuda, id="triton-cuda"),
]
DTYPES = [torch.float16, torch.bfloat16]


def linear_inputs(m: int, n: int, k: int, dtype: torch.dtype, device: str, bias: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen).to(dtype).to(device)
    w = (torch.randn(n, k, generator=gen) / math.sqrt(k)).to(dtype).to(device)
    b = torch.randn(n, generator=gen).to(dtype).to(device) if bias else None
    return x, w, b


def bi_linear(backend: str, x, w, b=None) -> torch.Tensor:
    out = poison_(torch.empty(*x.shape[:-1], w.shape[0], dtype=x.dtype, device=x.device))
    with use_backend(backend):
        assert batch_invariant_linear(x, w, b, out=out) is out
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_linear_matches_fp32_reference(backend, device, dtype):
    for m, n, k, bias in ((1, 50, 96, False), (37, 33, 40, True)):  # odd N and K, M over one 32-row tile
        x, w, b = linear_inputs(m, n, k, dtype, device, bias)
        expected = x.float() @ w.float().t() + (b.float() if bias else 0)
        # one rounding of the fp32 result (the interpreter truncates fp32 -> bf16: one ulp at most)
        assert_close(bi_linear(backend, x, w, b), expected, dtype)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_linear_rows_do_not_depend_on_the_batch(backend, device):
    x, w, b = linear_inputs(37, 40, 64, torch.bfloat16, device, bias=True)
    full = bi_linear(backend, x, w, b)
    for rows in (slice(0, 1), slice(3, 4), slice(0, 5), slice(30, 37)):
        assert torch.equal(bi_linear(backend, x[rows], w, b), full[rows]), rows
    strided = torch.cat([x, x], dim=1)[:, :64]  # rows with a stride != K
    assert torch.equal(bi_linear(backend, strided, w, b), full)
    assert torch.equal(bi_linear(backend, x.view(37, 1, 64), w, b).view(37, 40), full)


@pytest.mark.cuda
@pytest.mark.parametrize("n,k", [(3072, 2048), (2048, 8192), (16384, 2048), (128256, 2048), (4096, 14336)])
def test_linear_llama_shapes_on_gpu(n, k):
    """Llama-3.2-1B / 3.1-8B projections: M = 1..64 rows, every prefix of a 64-row batch bitwise equal to
    the rows alone, and within bf16 rounding of the fp32 product."""
    x, w, _ = linear_inputs(64, n, k, torch.bfloat16, "cuda")
    full = batch_invariant_linear(x, w)
    assert_close(full, x.float() @ w.float().t(), torch.bfloat16)
    for m in (1, 2, 4, 5, 20, 33):
        assert torch.equal(batch_invariant_linear(x[:m], w), full[:m]), m
    assert torch.equal(batch_invariant_linear(x[17:18], w), full[17:18])


def bi_attention(backend: str, inp: dict, **kw) -> torch.Tensor:
    out = poison_(torch.empty_like(inp["q"]))
    with use_backend(backend):
        got = batch_invariant_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["block_tables"],
                                        inp["prefix_lens"], inp["qo_indptr"], inp["tree_mask"],
                                        max_q_len=inp["max_q_len"], out=out, **kw)
    assert got is out
    return out


@pytest.mark.parametrize("mask", ["causal", "tree"])
@pytest.mark.parametrize("backend,device", BACKENDS)
def test_attention_matches_reference(backend, device, mask):
    """FlashAttention's rule against the fp32 reference; NaN-poisoned slots outside the valid range."""
    inp = make_inputs([0, 70, 3], [3, 2, 5], num_kv_heads=2, group=2, head_dim=64, dtype=torch.float16,
                      device=device, page_size=16, mask=mask, seed=3)
    out = bi_attention(backend, inp)
    ref_out, _ = ref.tree_attention(*ref_args(inp))
    low_out, _ = ref.tree_attention(*ref_args(inp), compute_dtype=inp["q"].dtype)
    assert not out.isnan().any()
    err, base = (out.float() - ref_out).abs().max().item(), (low_out - ref_out).abs().max().item()
    assert err <= 2 * base + 1e-3, (err, base)


def decode_inputs(chain: dict, b: int, i: int) -> dict:
    """Query i of request b of ``chain`` as a decode: prefix_lens[b] + i cached tokens, one new token."""
    start = int(chain["qo_indptr"][b])
    return {**chain, "q": chain["q"][start + i:start + i + 1].clone(), "block_tables": chain["block_tables"][b:b + 1],
            "prefix_lens": chain["prefix_lens"][b:b + 1] + i,
            "qo_indptr": torch.tensor([0, 1], dtype=torch.int32, device=chain["q"].device), "max_q_len": 1}


def assert_decode_equals_chain(backend: str, chain: dict) -> None:
    out = bi_attention(backend, chain)
    indptr = chain["qo_indptr"].tolist()
    for b in range(len(indptr) - 1):
        for i in range(indptr[b + 1] - indptr[b]):
            alone = bi_attention(backend, decode_inputs(chain, b, i))
            assert torch.equal(alone[0], out[indptr[b] + i]), (b, i)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_attention_decode_equals_verify_chain_row(backend, device):
    """Row i of a chain over prefix L == a decode over prefix L + i (the chain's later tokens are in the
    cache, masked); the other requests of the batch change nothing. Prefixes cross the 64-key tiles."""
    chain = make_inputs([62, 5], [4, 3], num_kv_heads=1, group=4, head_dim=64, dtype=torch.bfloat16,
                        device=device, page_size=16, mask="causal", seed=4)
    assert_decode_equals_chain(backend, chain)


@pytest.mark.cuda
@pytest.mark.parametrize("head_dim", [64, 128])
def test_attention_decode_equals_verify_chain_row_on_gpu(head_dim):
    """Llama shapes (32 q / 8 kv heads), 4 requests of chains of 5 over prefixes around the tile edges."""
    chain = make_inputs([59, 200, 1, 127], [5, 5, 5, 5], num_kv_heads=8, group=4, head_dim=head_dim,
                        dtype=torch.bfloat16, device="cuda", page_size=16, mask="causal", seed=5)
    assert_decode_equals_chain("triton", chain)
    out = bi_attention("triton", chain)
    ref_out, _ = ref.tree_attention(*ref_args(chain))
    low_out, _ = ref.tree_attention(*ref_args(chain), compute_dtype=torch.bfloat16)
    assert (out.float() - ref_out).abs().max() <= 2 * (low_out - ref_out).abs().max() + 4e-3


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.cpu),
                                    pytest.param("cuda", marks=pytest.mark.cuda)])
def test_rmsnorm_rows_do_not_depend_on_the_batch(device):
    """The mode runs the plain norms: 300 rows vs each row alone, both norms, hf rounding (the CUDA kernel
    side across its launch shapes: tests/ops/test_norm.py::test_rows_do_not_depend_on_the_batch)."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(300, 2048, generator=gen).to(torch.bfloat16).to(device)
    r = torch.randn(300, 2048, generator=gen).to(torch.bfloat16).to(device)
    w = (1 + 0.1 * torch.randn(2048, generator=gen)).to(torch.bfloat16).to(device)
    full = rmsnorm(x, w, 1e-5, hf_exact=True)
    xs, rs = x.clone(), r.clone()
    fused_add_rmsnorm(xs, rs, w, 1e-5, hf_exact=True)
    for row in (0, 1, 299):
        one = slice(row, row + 1)
        assert torch.equal(rmsnorm(x[one], w, 1e-5, hf_exact=True), full[one])
        x1, r1 = x[one].clone(), r[one].clone()
        fused_add_rmsnorm(x1, r1, w, 1e-5, hf_exact=True)
        assert torch.equal(x1, xs[one]) and torch.equal(r1, rs[one])


@pytest.mark.cpu
def test_bad_inputs():
    x, w, _ = linear_inputs(3, 8, 16, torch.float16, "cpu")
    with pytest.raises(TypeError, match="x has dtype torch.float32"):
        batch_invariant_linear(x.float(), w.float())
    with pytest.raises(ValueError, match=r"weight must have shape \[N, 16\]"):
        batch_invariant_linear(x, w[:, :8])
    with pytest.raises(ValueError, match="weight must be contiguous in its last dimension"):
        batch_invariant_linear(x, torch.empty(16, 8, dtype=torch.float16).t())
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        batch_invariant_linear(x, w, torch.zeros(7, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"out must have shape \(3, 8\)"):
        batch_invariant_linear(x, w, out=torch.empty(3, 7, dtype=torch.float16))
    inp = make_inputs([4], [2], dtype=torch.float16)
    with pytest.raises(ValueError, match="q head_dim must be one of"):
        batch_invariant_attention(inp["q"][..., :32], inp["k_cache"][..., :32], inp["v_cache"][..., :32],
                                  inp["block_tables"], inp["prefix_lens"], inp["qo_indptr"])
