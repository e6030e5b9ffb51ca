"""linear: every backend vs the fp32 reference over M 1..4 (the skinny CUDA kernel) and larger M (cuBLAS
inside the CUDA op), odd K and N, unaligned (scalar) rows, bias, strided rows, NaN-poisoned outputs,
opcheck, torch.compile, CUDA graphs, bad inputs. linear_silu_mul: bit for bit linear -> silu_and_mul on every
backend, the engine's tensor-parallel gate_up shards, the same checks."""

import pytest
import torch

from ssdk.engine.layers.linear import MergedColumnParallelLinear
from ssdk.engine.parallel import TPGroup, building
from ssdk.ops import linear, linear_silu_mul, silu_and_mul, use_backend
from ssdk.ops.linear import SKINNY_MAX_ROWS
from ssdk.ref import linear as ref
from ssdk.testing.tolerances import assert_close, poison_

from ._params import BACKEND_DEVICES


def problems(device: str) -> list[tuple[tuple[int, ...], int]]:
    """(x shape [..., K], N): M 1..8 and beyond, odd K (scalar path) and odd N (partial row groups)."""
    if device == "cpu":  # tiny: the Triton interpreter pays per program
        return [((1, 64), 32), ((3, 33), 17), ((2, 3, 40), 9), ((8, 16), 24), ((11, 24), 8)]
    return [((1, 4096), 4096), ((2, 4096), 6144), ((3, 14336), 256), ((4, 4096), 1000), ((1, 14336), 512),
            ((1, 1001), 37), ((2, 999), 130), ((4, 1003), 67), ((2, 4, 512), 96), ((1, 8), 1), ((5, 1001), 37),
            ((6, 256), 4099), ((8, 12288), 264), ((9, 512), 300), ((64, 1024), 257)]


def dtypes_for(backend: str, device: str) -> list[torch.dtype]:
    if backend == "triton" and device == "cpu":  # the interpreter truncates fp32 -> bf16
        return [torch.float32, torch.float16]
    return [torch.float32, torch.float16, torch.bfloat16]


def make(x_shape, n, dtype, device, bias=True):
    k = x_shape[-1]
    x = torch.randn(x_shape, dtype=dtype, device=device)
    weight = (torch.randn(n, k, device=device) / k ** 0.5).to(dtype)
    b = torch.randn(n, dtype=dtype, device=device) if bias else None
    return x, weight, b


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_reference(backend, device, bias):
    for x_shape, n in problems(device):
        for dtype in dtypes_for(backend, device):
            x, weight, b = make(x_shape, n, dtype, device, bias)
            expected = ref.linear(x, weight, b)
            out = poison_(torch.empty(expected.shape, dtype=dtype, device=device))
            with use_backend(backend):
                got = linear(x, weight, b, out=out)
                allocated = linear(x, weight, b)
            assert got is out
            # fp32 sums in another order, one rounding: within the dtype's tolerance of the fp32 result.
            assert_close(got, expected)
            torch.testing.assert_close(allocated, got, atol=0, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_matches_torch_linear(backend):
    # The drop-in claim: F.linear (cuBLAS, bf16) up to each side's rounding of its fp32 accumulation.
    for m in range(1, SKINNY_MAX_ROWS + 3):
        x, weight, b = make((m, 4096), 1024, torch.bfloat16, "cuda")
        with use_backend(backend):
            got = linear(x, weight, b)
        assert_close(got, torch.nn.functional.linear(x, weight, b))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("offset", [8, 1])  # 16-byte aligned rows (vector path) and unaligned ones (scalar)
def test_strided_rows(backend, device, offset):
    k, n, dtype = 64, 40, torch.float16
    x_base = torch.randn(3, k + 16, dtype=dtype, device=device)
    x = x_base[:, offset: offset + k]
    w_base = (torch.randn(n, k + 24, device=device) / 8).to(dtype)
    weight = w_base[:, offset: offset + k]
    out_base = poison_(torch.empty(3, n + 8, dtype=dtype, device=device))
    out = out_base[:, 8:]
    with use_backend(backend):
        linear(x, weight, out=out)
    assert_close(out, ref.linear(x, weight))
    assert torch.isnan(out_base[:, :8]).all(), "wrote outside the output view"


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_empty(backend, device):
    weight = torch.randn(16, 32, device=device)
    with use_backend(backend):
        assert linear(torch.empty(0, 32, device=device), weight).shape == (0, 16)
        assert linear(torch.randn(2, 32, device=device), weight[:0]).shape == (2, 0)


@pytest.mark.cuda
def test_opcheck():
    x = torch.randn(4, 512, dtype=torch.bfloat16, device="cuda")
    weight = torch.randn(96, 512, dtype=torch.bfloat16, device="cuda")
    bias = torch.randn(96, dtype=torch.bfloat16, device="cuda")
    for rows in (3, 12):  # the skinny kernel and the cuBLAS route
        xr = torch.randn(rows, 512, dtype=x.dtype, device="cuda")
        out = torch.empty(rows, 96, dtype=x.dtype, device="cuda")
        torch.library.opcheck(torch.ops.ssdk.linear.default, (out, xr, weight, bias))
        torch.library.opcheck(torch.ops.ssdk.linear.default, (out, xr, weight, None))


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.cpu),
                                    pytest.param("cuda", marks=pytest.mark.cuda)])
def test_torch_compile_fullgraph(device):
    x = torch.randn(2, 256, dtype=torch.bfloat16, device=device)
    weight = (torch.randn(128, 256, device=device) / 16).to(torch.bfloat16)

    def proj(h):
        return linear(h * 2, weight) + 1

    compiled = torch.compile(proj, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
    assert_close(compiled(x), proj(x))


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_capture(backend):
    x = torch.randn(1, 4096, dtype=torch.bfloat16, device="cuda")
    weight = (torch.randn(6144, 4096, device="cuda") / 64).to(torch.bfloat16)
    out = torch.empty(1, 6144, dtype=torch.bfloat16, device="cuda")
    with use_backend(backend):
        linear(x, weight, out=out)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            linear(x, weight, out=out)
    out.zero_()
    graph.replay()
    assert_close(out, ref.linear(x, weight))


@pytest.mark.cuda
def test_rows_are_independent_of_m():
    # The skinny kernel computes each row of x in the same order whatever M (1..SKINNY_MAX_ROWS) and its
    # launch configuration are; K = 4096 and 14336 take different configurations at M = 1, and N = 512 /
    # 16384 split K over 4 warps / 1 warp per row group (on GPUs of 32 to 170 SMs), N = 8192 over 2 (H100);
    # M = 1 runs the two-row kernel at N = 512 and 6144 (H100).
    for k, n in ((4096, 512), (14336, 512), (4096, 16384), (4096, 6144), (4096, 8192)):
        x = torch.randn(SKINNY_MAX_ROWS, k, dtype=torch.bfloat16, device="cuda")
        weight = (torch.randn(n, k, device="cuda") / 64).to(torch.bfloat16)
        full, full_silu_mul = linear(x, weight), linear_silu_mul(x, weight)
        for m in range(1, SKINNY_MAX_ROWS):
            torch.testing.assert_close(linear(x[:m], weight), full[:m], atol=0, rtol=0)
            torch.testing.assert_close(linear_silu_mul(x[:m], weight), full_silu_mul[:m], atol=0, rtol=0)


@pytest.mark.cpu
def test_bad_inputs_name_the_argument():
    x, weight = torch.randn(4, 64), torch.randn(32, 64)
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        linear(x.long(), weight)
    with pytest.raises(TypeError, match="weight has dtype torch.float16 but x"):
        linear(x, weight.half())
    with pytest.raises(ValueError, match=r"weight must have shape \[N, 64\]"):
        linear(x, torch.randn(32, 63))
    with pytest.raises(ValueError, match="weight must be contiguous in its last dimension"):
        linear(x, torch.randn(64, 32).t())
    with pytest.raises(ValueError, match=r"bias must have shape \(32,\)"):
        linear(x, weight, torch.randn(31))
    with pytest.raises(TypeError, match="bias has dtype torch.float16 but x"):
        linear(x, weight, torch.randn(32, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"out must have shape \(4, 32\)"):
        linear(x, weight, out=torch.empty(4, 64))
    with pytest.raises(ValueError, match="x must be contiguous in its last dimension"):
        linear(torch.randn(64, 4).t(), weight)
    with pytest.raises(ValueError, match="K >= 1"):
        linear(torch.randn(4, 0), torch.randn(32, 0))
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        linear(x, None)


@pytest.mark.cuda
def test_bad_inputs_cuda():
    x = torch.randn(4, 64, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(32, 64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="weight is on cpu but x is on cuda"):
        linear(x, weight.cpu())
    with pytest.raises(RuntimeError, match="out must have shape"):
        torch.ops.ssdk.linear(torch.empty(4, 31, device="cuda", dtype=x.dtype), x, weight, None)
    with pytest.raises(RuntimeError, match=r"weight must have shape \[N, 64\]"):
        torch.ops.ssdk.linear(torch.empty(4, 32, device="cuda", dtype=x.dtype), x, weight[:, :63], None)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        torch.ops.ssdk.linear(torch.empty(4, 32, device="cuda", dtype=x.dtype), x, weight, weight[0])
    with pytest.raises(RuntimeError, match="x must be a CUDA tensor"):
        torch.ops.ssdk.linear(torch.empty(4, 32), x.cpu(), weight.cpu(), None)


def silu_mul_problems(device: str) -> list[tuple[tuple[int, ...], int]]:
    """(x shape [..., K], I) for a [2I, K] = [gate | up] weight. CUDA: the Llama-3.1-8B gate_up (S = 1 split
    of K), 2I = 8192 (S = 2 on an H100), 6144 and 512 (S = 4), M = 1 on the one- and two-row kernels, long
    rows (K >= 8192), M 1..4 and the cuBLAS route beyond, odd K (scalar path) and odd I (partial groups)."""
    if device == "cpu":
        return [((1, 64), 16), ((3, 33), 9), ((2, 3, 40), 5), ((6, 16), 12)]
    return [((1, 4096), 14336), ((1, 4096), 4096), ((1, 4096), 3072), ((2, 4096), 3072), ((4, 4096), 256), ((3, 14336), 128),
            ((1, 14336), 2048), ((1, 1001), 37), ((2, 999), 65), ((4, 1003), 33), ((2, 4, 512), 48),
            ((5, 1001), 37), ((64, 1024), 129)]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("hf_exact", [False, True])
def test_silu_mul_equals_unfused(backend, device, hf_exact):
    for x_shape, inter in silu_mul_problems(device):
        for dtype in dtypes_for(backend, device):
            x, weight, _ = make(x_shape, 2 * inter, dtype, device, bias=False)
            out = poison_(torch.empty((*x_shape[:-1], inter), dtype=dtype, device=device))
            with use_backend(backend):
                got = linear_silu_mul(x, weight, out=out, hf_exact=hf_exact)
                unfused = silu_and_mul(linear(x, weight), hf_exact=hf_exact)
            assert got is out
            torch.testing.assert_close(got, unfused, atol=0, rtol=0)
            # gate and up each within one rounding of the fp32 reference's: twice the dtype's tolerance
            assert_close(got, ref.linear_silu_mul(x, weight, hf_exact), scale=2)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_silu_mul_tensor_parallel_shards(backend, device):
    # Rank r of the engine's MergedColumnParallelLinear (tp = 2) holds [gate rows of r | up rows of r]:
    # its fused output is the unfused one of that shard, and that rank's slice of the full output.
    k, inter, tp, dtype = (4096, 2048, 2, torch.bfloat16) if device == "cuda" else (32, 24, 2, torch.float16)
    x = torch.randn(2, k, dtype=dtype, device=device)
    gate, up = ((torch.randn(inter, k, device=device) / k ** 0.5).to(dtype) for _ in range(2))
    with use_backend(backend):
        full = linear_silu_mul(x, torch.cat([gate, up]), hf_exact=True)
        for rank in range(tp):
            with building(TPGroup(rank=rank, size=tp)):
                layer = MergedColumnParallelLinear(k, [inter, inter]).to(device=device, dtype=dtype)
            layer.weight_loader(layer.weight, gate, 0)
            layer.weight_loader(layer.weight, up, 1)
            got = linear_silu_mul(x, layer.weight, hf_exact=True)
            torch.testing.assert_close(got, silu_and_mul(linear(x, layer.weight), hf_exact=True), atol=0, rtol=0)
            shard = slice(rank * inter // tp, (rank + 1) * inter // tp)
            assert_close(got, full[:, shard])


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_silu_mul_strided_rows(backend, device):
    k, inter, dtype = 64, 20, torch.float16
    x = torch.randn(3, k + 16, dtype=dtype, device=device)[:, 8: 8 + k]
    weight = (torch.randn(2 * inter, k + 8, device=device) / 8).to(dtype)[:, :k]
    out_base = poison_(torch.empty(3, inter + 8, dtype=dtype, device=device))
    out = out_base[:, 8:]
    with use_backend(backend):
        linear_silu_mul(x, weight, out=out)
        torch.testing.assert_close(out, silu_and_mul(linear(x, weight)), atol=0, rtol=0)
    assert torch.isnan(out_base[:, :8]).all(), "wrote outside the output view"


@pytest.mark.cuda
def test_silu_mul_opcheck_and_graph():
    weight = (torch.randn(192, 512, device="cuda") / 16).to(torch.bfloat16)
    for rows in (3, 12):  # the fused kernel and the cuBLAS + silu_and_mul route
        x = torch.randn(rows, 512, dtype=weight.dtype, device="cuda")
        out = torch.empty(rows, 96, dtype=weight.dtype, device="cuda")
        for hf_exact in (False, True):
            torch.library.opcheck(torch.ops.ssdk.linear_silu_mul.default, (out, x, weight, hf_exact))
    x = torch.randn(1, 512, dtype=weight.dtype, device="cuda")
    out = torch.empty(1, 96, dtype=weight.dtype, device="cuda")
    linear_silu_mul(x, weight, out=out)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        linear_silu_mul(x, weight, out=out)
    out.zero_()
    graph.replay()
    torch.testing.assert_close(out, linear_silu_mul(x, weight), atol=0, rtol=0)


@pytest.mark.cpu
def test_silu_mul_bad_inputs_name_the_argument():
    x = torch.randn(4, 64)
    with pytest.raises(ValueError, match=r"weight must have an even number of rows \(\[gate \| up\]\), got \(31, 64\)"):
        linear_silu_mul(x, torch.randn(31, 64))
    with pytest.raises(ValueError, match=r"weight must have shape \[N, 64\]"):
        linear_silu_mul(x, torch.randn(32, 63))
    with pytest.raises(ValueError, match=r"out must have shape \(4, 16\)"):
        linear_silu_mul(x, torch.randn(32, 64), out=torch.empty(4, 32))
    with pytest.raises(TypeError, match="weight has dtype torch.float16 but x"):
        linear_silu_mul(x, torch.randn(32, 64, dtype=torch.float16))


@pytest.mark.cuda
def test_silu_mul_bad_inputs_cuda():
    x = torch.randn(2, 64, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(32, 64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="weight must have an even number of rows"):
        torch.ops.ssdk.linear_silu_mul(torch.empty(2, 15, device="cuda", dtype=x.dtype), x, weight[:31], False)
    with pytest.raises(RuntimeError, match=r"out must have shape \[2, 16\]"):
        torch.ops.ssdk.linear_silu_mul(torch.empty(2, 32, device="cuda", dtype=x.dtype), x, weight, False)
