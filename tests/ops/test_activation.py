"""silu_and_mul: every backend vs the fp32 reference, transformers' MLP activation bit for bit, strided
rows, NaN-poisoned outputs, opcheck, torch.compile, CUDA graphs, bad inputs."""

import pytest
import torch

from ssdk.ops import silu_and_mul, use_backend
from ssdk.ref import activation as ref
from ssdk.testing.tolerances import assert_close, poison_

from ._params import BACKEND_DEVICES


def shapes(device: str) -> list[tuple[int, ...]]:
    """x shapes [..., 2d]: odd d (scalar path), leading dims, Llama/Qwen intermediate sizes."""
    if device == "cpu":
        return [(1, 128), (3, 2 * 100), (2, 3, 64), (4, 2 * 7)]
    return [(1, 2 * 14336), (3, 2 * 100), (2, 3, 2 * 4096), (64, 2 * 12288), (33, 2 * 5003), (257, 2 * 1024), (5, 2)]


def dtypes_for(backend: str, device: str) -> list[torch.dtype]:
    if backend == "triton" and device == "cpu":  # the interpreter truncates fp32 -> bf16
        return [torch.float32, torch.float16]
    return [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("hf_exact", [False, True])
def test_matches_reference(backend, device, hf_exact):
    for shape in shapes(device):
        for dtype in dtypes_for(backend, device):
            x = 3 * torch.randn(shape, dtype=dtype, device=device)
            expected = ref.silu_and_mul(x, hf_exact)
            out = poison_(torch.empty(expected.shape, dtype=dtype, device=device))
            with use_backend(backend):
                got = silu_and_mul(x, out=out, hf_exact=hf_exact)
                allocated = silu_and_mul(x, hf_exact=hf_exact)
            assert got is out
            # Same formula in fp32: at most an fp32 ulp of expf before the rounding to the dtype.
            assert_close(got, expected, scale=0.5)
            torch.testing.assert_close(allocated, got, atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_hf_exact_matches_transformers_mlp_activation(backend, device):
    # transformers' LlamaMLP / Qwen3MLP: act_fn(gate_proj(x)) * up_proj(x), each op in the model dtype.
    for dtype in dtypes_for(backend, device):
        if dtype == torch.float32:
            continue
        gate = 4 * torch.randn(16, 1000, dtype=dtype, device=device)
        up = torch.randn(16, 1000, dtype=dtype, device=device)
        expected = torch.nn.functional.silu(gate) * up
        with use_backend(backend):
            got = silu_and_mul(torch.cat((gate, up), -1), hf_exact=True)
        mismatch = (got != expected).float().mean().item()
        assert mismatch < 1e-3, f"{mismatch:.3%} of elements differ from transformers"  # expf ulp at a tie, if ever
        assert_close(got, expected, scale=0.5)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_strided_rows(backend, device):
    d = 96
    base = torch.randn(6, 2 * d + 32, dtype=torch.float16, device=device)
    x = base[:, 16: 16 + 2 * d]
    out_base = poison_(torch.empty(6, d + 8, dtype=torch.float16, device=device))
    out = out_base[:, 8:]
    with use_backend(backend):
        silu_and_mul(x, out=out)
    assert_close(out, ref.silu_and_mul(x))
    assert torch.isnan(out_base[:, :8]).all(), "wrote outside the output view"


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_empty(backend, device):
    with use_backend(backend):
        assert silu_and_mul(torch.empty(0, 64, device=device)).shape == (0, 32)


@pytest.mark.cuda
def test_opcheck():
    x = torch.randn(8, 512, dtype=torch.bfloat16, device="cuda")
    torch.library.opcheck(torch.ops.ssdk.silu_and_mul.default, (torch.empty(8, 256, dtype=x.dtype, device="cuda"),
                                                                x, False))
    torch.library.opcheck(torch.ops.ssdk.silu_and_mul.default, (torch.empty(8, 256, dtype=x.dtype, device="cuda"),
                                                                x, True))


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.cpu),
                                    pytest.param("cuda", marks=pytest.mark.cuda)])
def test_torch_compile_fullgraph(device):
    x = torch.randn(4, 256, dtype=torch.bfloat16, device=device)

    def mlp(h):
        return silu_and_mul(h * 2) + 1

    compiled = torch.compile(mlp, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
    assert_close(compiled(x), mlp(x))


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_capture(backend):
    x = torch.randn(16, 2 * 14336, dtype=torch.bfloat16, device="cuda")
    out = torch.empty(16, 14336, dtype=torch.bfloat16, device="cuda")
    with use_backend(backend):
        silu_and_mul(x, out=out)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            silu_and_mul(x, out=out)
    out.zero_()
    graph.replay()
    assert_close(out, ref.silu_and_mul(x), scale=0.5)


@pytest.mark.cpu
def test_bad_inputs_name_the_argument():
    x = torch.randn(4, 64)
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        silu_and_mul(x.long())
    with pytest.raises(ValueError, match="x last dim must be even"):
        silu_and_mul(torch.randn(4, 63))
    with pytest.raises(ValueError, match=r"out must have shape \(4, 32\)"):
        silu_and_mul(x, out=torch.empty(4, 64))
    with pytest.raises(TypeError, match="out has dtype torch.float16 but x"):
        silu_and_mul(x, out=torch.empty(4, 32, dtype=torch.float16))
    with pytest.raises(ValueError, match="x must be contiguous in its last dimension"):
        silu_and_mul(torch.randn(64, 4).t())
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        silu_and_mul([1.0, 2.0])


@pytest.mark.cuda
def test_bad_inputs_cuda():
    x = torch.randn(4, 64, device="cuda")
    with pytest.raises(ValueError, match="out is on cpu but x is on cuda"):
        silu_and_mul(x, out=torch.empty(4, 32))
    with pytest.raises(RuntimeError, match="out must have shape"):
        torch.ops.ssdk.silu_and_mul(torch.empty(4, 64, device="cuda"), x, False)
    with pytest.raises(RuntimeError, match="input must be a CUDA tensor"):
        torch.ops.ssdk.silu_and_mul(torch.empty(4, 32), x.cpu(), False)
