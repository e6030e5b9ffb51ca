"""linear: every backend vs the fp32 reference over M 1..4 (the skinny CUDA kernel) and larger M (cuBLAS
inside the CUDA op), odd K and N, unaligned (scalar) rows, bias, strided rows, NaN-poisoned outputs,
opcheck, torch.compile, CUDA graphs, bad inputs."""

import pytest
import torch

from ssdk.ops import linear, use_backend
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
    # 16384 split K over 4 warps / 1 warp per row group (on GPUs of 32 to 170 SMs).
    for k, n in ((4096, 512), (14336, 512), (4096, 16384)):
        x = torch.randn(SKINNY_MAX_ROWS, k, dtype=torch.bfloat16, device="cuda")
        weight = (torch.randn(n, k, device="cuda") / 64).to(torch.bfloat16)
        full = linear(x, weight)
        for m in range(1, SKINNY_MAX_ROWS):
            torch.testing.assert_close(linear(x[:m], weight), full[:m], atol=0, rtol=0)


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
