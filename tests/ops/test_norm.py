"""rmsnorm / fused_add_rmsnorm: every backend vs the fp32 reference, HF bit-exactness, strided rows,
NaN-poisoned outputs, opcheck, torch.compile, CUDA graphs, bad inputs."""

import pytest
import torch

import ssdk
from ssdk.ops import fused_add_rmsnorm, rmsnorm, use_backend
from ssdk.ref import norm as ref
from ssdk.testing.tolerances import assert_close, poison_

from ._params import BACKEND_DEVICES

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
EPS = 1e-6


def shapes(device: str) -> list[tuple[int, int]]:
    """(rows, hidden): odd sizes, vector and scalar paths, the 64..16384 hidden range."""
    if device == "cpu":
        return [(1, 64), (3, 100), (5, 128), (2, 1000)]
    return [(1, 64), (3, 100), (7, 4096), (16, 4095), (64, 8192), (33, 5120), (2, 16384), (4, 16383), (300, 2048)]


def inputs(rows: int, hidden: int, dtype: torch.dtype, device: str):
    x = torch.randn(rows, hidden, dtype=dtype, device=device)
    residual = torch.randn(rows, hidden, dtype=dtype, device=device)
    weight = (1 + 0.5 * torch.randn(hidden, device=device)).to(dtype)
    return x, residual, weight


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hf_exact", [False, True])
def test_rmsnorm_matches_reference(backend, device, dtype, hf_exact):
    for rows, hidden in shapes(device):
        x, _, weight = inputs(rows, hidden, dtype, device)
        expected = ref.rmsnorm(x, weight, EPS, hf_exact)
        out = poison_(torch.empty_like(x))
        with use_backend(backend):
            got = rmsnorm(x, weight, EPS, out=out, hf_exact=hf_exact)
        assert got is out
        assert_close(got, expected)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hf_exact", [False, True])
def test_fused_add_rmsnorm_matches_reference(backend, device, dtype, hf_exact):
    for rows, hidden in shapes(device):
        x, residual, weight = inputs(rows, hidden, dtype, device)
        expected_out, expected_residual = ref.fused_add_rmsnorm(x, residual, weight, EPS, hf_exact)
        with use_backend(backend):
            fused_add_rmsnorm(x, residual, weight, EPS, hf_exact=hf_exact)
        if backend == "triton" and device == "cpu":
            # The interpreter truncates fp32 -> bf16: check the residual to a ulp, and the output
            # against the norm of the residual it actually stored.
            assert_close(residual, expected_residual)
            if hf_exact:
                expected_out = ref.rmsnorm(residual, weight, EPS, hf_exact)
        else:
            torch.testing.assert_close(residual, expected_residual, atol=0, rtol=0)  # one rounding of a sum
        assert_close(x, expected_out)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_strided_rows_and_leading_dims(backend, device):
    # Views into a wider buffer (as from a fused projection) and 3-D inputs.
    dtype, hidden = torch.float16, 256  # (the Triton interpreter rounds fp16 exactly, not bf16)
    base = torch.randn(2, 6, hidden + 64, dtype=dtype, device=device)
    x = base[..., :hidden]
    weight = torch.randn(hidden, dtype=dtype, device=device)
    expected = ref.rmsnorm(x, weight, EPS)
    out_base = poison_(torch.empty(2, 6, hidden + 32, dtype=dtype, device=device))
    out = out_base[..., 32:]
    with use_backend(backend):
        rmsnorm(x, weight, EPS, out=out)
    assert_close(out, expected)
    assert torch.isnan(out_base[..., :32]).all(), "wrote outside the output view"

    residual_base = torch.randn(12, hidden * 2, dtype=dtype, device=device)
    residual = residual_base[:, hidden:].view(2, 6, hidden)
    x2 = x.clone()
    expected_out, expected_residual = ref.fused_add_rmsnorm(x2, residual, weight, EPS)
    untouched = residual_base[:, :hidden].clone()
    with use_backend(backend):
        fused_add_rmsnorm(x2, residual, weight, EPS)
    assert_close(x2, expected_out)
    torch.testing.assert_close(residual, expected_residual, atol=0, rtol=0)
    torch.testing.assert_close(residual_base[:, :hidden], untouched, atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_empty_rows(backend, device):
    x = torch.empty(0, 128, device=device)
    with use_backend(backend):
        assert rmsnorm(x, torch.ones(128, device=device)).shape == (0, 128)


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.cpu),
                                    pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_hf_exact_matches_transformers_bit_for_bit(device, dtype):
    transformers_llama = pytest.importorskip("transformers.models.llama.modeling_llama",
                                             reason="transformers not installed")
    hidden = 4096
    norm = transformers_llama.LlamaRMSNorm(hidden, eps=1e-5).to(device=device, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(hidden))
    x = torch.randn(64, hidden, device=device, dtype=dtype) * 3
    residual = torch.randn(64, hidden, device=device, dtype=dtype)
    with torch.no_grad():
        hf_residual = residual + x  # HF adds in the model dtype
        hf_out = norm(hf_residual)
        hf_plain = norm(x)
    ours_plain = rmsnorm(x, norm.weight.detach(), 1e-5, hf_exact=True)
    ours_x, ours_residual = x.clone(), residual.clone()
    fused_add_rmsnorm(ours_x, ours_residual, norm.weight.detach(), 1e-5, hf_exact=True)
    torch.testing.assert_close(ours_residual, hf_residual, atol=0, rtol=0)
    # fp32 reductions in a different order can move rsqrt by an fp32 ulp: allow a rare one-ulp flip.
    for ours, theirs in ((ours_plain, hf_plain), (ours_x, hf_out)):
        mismatch = (ours != theirs).float().mean().item()
        assert mismatch < 1e-3, f"{mismatch:.2%} of elements differ from transformers"
        assert_close(ours, theirs, scale=0.5)


@pytest.mark.cuda
def test_opcheck():
    x, residual, weight = inputs(8, 512, torch.bfloat16, "cuda")
    out = torch.empty_like(x)
    torch.library.opcheck(torch.ops.ssdk.rmsnorm.default, (out, x, weight, EPS, False))
    torch.library.opcheck(torch.ops.ssdk.fused_add_rmsnorm.default, (x, residual, weight, EPS, True))


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.cpu),
                                    pytest.param("cuda", marks=pytest.mark.cuda)])
def test_torch_compile_fullgraph(device):
    x, residual, weight = inputs(4, 256, torch.bfloat16, device)

    def block(h, res):
        fused_add_rmsnorm(h, res, weight, EPS)
        return rmsnorm(h, weight, EPS) * 2

    expected_h, expected_res = x.clone(), residual.clone()
    expected = block(expected_h, expected_res)
    compiled = torch.compile(block, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
    got = compiled(x, residual)
    assert_close(got, expected)
    torch.testing.assert_close(residual, expected_res, atol=0, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_capture(backend):
    x, residual, weight = inputs(16, 4096, torch.bfloat16, "cuda")
    out = torch.empty_like(x)
    expected = ref.rmsnorm(x, weight, EPS)
    with use_backend(backend):
        rmsnorm(x, weight, EPS, out=out)  # warm up (Triton compiles outside the capture)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            rmsnorm(x, weight, EPS, out=out)
    out.zero_()
    graph.replay()
    assert_close(out, expected)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("hidden", [2048, 4096, 5120, 8192])
def test_rows_do_not_depend_on_the_batch(backend, hidden):
    """Batch invariance (what greedy speculative == autoregressive decoding relies on): rows normalized
    alone, or 3 at a time, are bitwise the rows of a 4096-row call (the CUDA kernel picks other launch
    shapes for small and large inputs)."""
    x, residual, weight = inputs(4096, hidden, torch.bfloat16, "cuda")
    with use_backend(backend):
        batched = rmsnorm(x, weight, EPS)
        x_add, res_add = x.clone(), residual.clone()
        fused_add_rmsnorm(x_add, res_add, weight, EPS)
        for rows in (slice(0, 1), slice(4093, 4096)):
            assert torch.equal(rmsnorm(x[rows].clone(), weight, EPS), batched[rows])
            x_one, res_one = x[rows].clone(), residual[rows].clone()
            fused_add_rmsnorm(x_one, res_one, weight, EPS)
            assert torch.equal(x_one, x_add[rows]) and torch.equal(res_one, res_add[rows])


@pytest.mark.cpu
def test_bad_inputs_name_the_argument():
    x = torch.randn(4, 64)
    w = torch.randn(64)
    with pytest.raises(TypeError, match="x has dtype torch.int32"):
        rmsnorm(x.int(), w)
    with pytest.raises(TypeError, match="weight has dtype torch.float16 but x"):
        rmsnorm(x, w.half())
    with pytest.raises(ValueError, match=r"weight must have shape \(64,\)"):
        rmsnorm(x, torch.randn(32))
    with pytest.raises(ValueError, match="x must be contiguous in its last dimension"):
        rmsnorm(torch.randn(64, 4).t(), w)
    with pytest.raises(ValueError, match="hidden size"):
        rmsnorm(torch.randn(2, 16385), torch.randn(16385))
    with pytest.raises(ValueError, match=r"out must have shape"):
        rmsnorm(x, w, out=torch.empty(4, 32))
    with pytest.raises(ValueError, match=r"residual must have shape"):
        fused_add_rmsnorm(x, torch.randn(3, 64), w)
    with pytest.raises(TypeError, match="residual has dtype"):
        fused_add_rmsnorm(x, torch.randn(4, 64, dtype=torch.bfloat16), w)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        rmsnorm(x, [1.0] * 64)


@pytest.mark.cuda
def test_bad_inputs_cuda():
    x = torch.randn(4, 64, device="cuda")
    with pytest.raises(ValueError, match="weight is on cpu but x is on cuda"):
        rmsnorm(x, torch.randn(64))
    # The C++ launcher checks too, for callers of torch.ops.ssdk directly.
    with pytest.raises(RuntimeError, match="weight must have shape"):
        torch.ops.ssdk.rmsnorm(torch.empty_like(x), x, torch.randn(32, device="cuda"), EPS, False)
    with pytest.raises(RuntimeError, match="input must be a CUDA tensor"):
        torch.ops.ssdk.rmsnorm(torch.empty(4, 64), torch.randn(4, 64), torch.randn(64), EPS, False)


@pytest.mark.cpu
def test_backend_overrides(monkeypatch):
    from ssdk.ops import _backend

    monkeypatch.setenv("SSDK_BACKEND_RMSNORM", "cuda")
    with pytest.raises(RuntimeError, match="SSDK_BACKEND_RMSNORM asks for backend 'cuda' for rmsnorm"):
        _backend.resolve("rmsnorm", "cpu")
    monkeypatch.setenv("SSDK_BACKEND_RMSNORM", "torch")
    assert _backend.resolve("rmsnorm", "cpu") == "torch"
    monkeypatch.setenv("SSDK_BACKEND", "bogus")
    monkeypatch.delenv("SSDK_BACKEND_RMSNORM")
    with pytest.raises(RuntimeError, match="unknown backend 'bogus'"):
        _backend.resolve("rmsnorm", "cpu")
    monkeypatch.delenv("SSDK_BACKEND")
    assert _backend.resolve("rmsnorm", "cpu") == "torch"
    assert ssdk.ops.resolve("fused_add_rmsnorm", "cpu") == "torch"
