"""linear (decode GEMMs, M = 1..8 rows) vs cuBLAS through F.linear, and F.linear with cuBLASLt preferred;
linear_silu_mul (gate_up GEMV + SwiGLU in one kernel) vs the unfused ssdk pair and F.linear + torch SwiGLU.

Shapes: the per-layer projections and LM head of Llama-3.1-8B and Qwen3-8B, bf16 (N x K):
  qkv 6144 x 4096, o 4096 x 4096, gate_up 28672 | 24576 x 4096, down 4096 x 14336 | 12288,
  lm_head 128256 | 151936 x 4096.
Byte model: the weight N·K·s plus x and out (M·(K + N)·s). Floor = bytes / copy bandwidth.
gate_up_silu rows: N = I outputs from the [2I, K] gate_up weight; bytes 2I·K·s + M·(K + I)·s.
Weights are always cold (rotated beyond 2x the L2), as in the engine, where every decode step streams all
of them from HBM: a 32 MB o_proj weight would otherwise stay L2-resident across the timed launches.
"""

from __future__ import annotations

import torch

from _common import Runner, parse_args
import torch.nn.functional as F

from ssdk.ops import get_impl

SHAPES = {
    "llama3.1-8b": {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336),
                    "lm_head": (128256, 4096)},
    "qwen3-8b": {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (24576, 4096), "down": (4096, 12288),
                 "lm_head": (151936, 4096)},
}


def main() -> None:
    args = parse_args(__doc__)
    args.cold = True  # see the module docstring
    rows = [1, 2, 4] if args.quick else [1, 2, 4, 8]  # ssdk-cuda at M = 8 is the op's cuBLAS route
    dtype, s = torch.bfloat16, 2
    runner = Runner("linear", args)
    ssdk_cuda, ssdk_triton = get_impl("linear", "cuda"), get_impl("linear", "triton")
    silu_mul_cuda, silu_and_mul_cuda = get_impl("linear_silu_mul", "cuda"), get_impl("silu_and_mul", "cuda")
    default_blas = torch.backends.cuda.preferred_blas_library()

    def cublaslt(x, w, o):  # F.linear with cuBLASLt preferred (restored after each call)
        torch.backends.cuda.preferred_blas_library("cublaslt")
        try:
            return torch.nn.functional.linear(x, w)
        finally:
            torch.backends.cuda.preferred_blas_library(default_blas)

    for model, shapes in SHAPES.items():
        for name, (n, k) in shapes.items():
            for m in rows:
                shape = f"{name},M={m},N={n},K={k}"
                nbytes = (n * k + m * (k + n)) * s

                def make():
                    return (torch.randn(m, k, dtype=dtype, device="cuda"),
                            torch.randn(n, k, dtype=dtype, device="cuda") / k ** 0.5,
                            torch.empty(m, n, dtype=dtype, device="cuda"))

                def run(provider, fn):
                    runner.run(shape, provider, fn, make, nbytes, model=model, m=m, n=n, k=k, layer=name)

                run("ssdk-cuda", lambda x, w, o: ssdk_cuda(o, x, w, None))
                run("ssdk-triton", lambda x, w, o: ssdk_triton(o, x, w, None))
                run("torch", lambda x, w, o: torch.nn.functional.linear(x, w))
                run("torch-cublaslt", cublaslt)
        inter = shapes["gate_up"][0] // 2
        k = shapes["gate_up"][1]
        for m in rows:
            shape = f"gate_up_silu,M={m},N={inter},K={k}"
            nbytes = (2 * inter * k + m * (k + inter)) * s

            def make():
                return (torch.randn(m, k, dtype=dtype, device="cuda"),
                        torch.randn(2 * inter, k, dtype=dtype, device="cuda") / k ** 0.5,
                        torch.empty(m, inter, dtype=dtype, device="cuda"),
                        torch.empty(m, 2 * inter, dtype=dtype, device="cuda"))

            def unfused(x, w, o, gate_up):
                ssdk_cuda(gate_up, x, w, None)
                silu_and_mul_cuda(o, gate_up, True)

            def torch_swiglu(x, w, o, gate_up):
                gate, up = F.linear(x, w).chunk(2, dim=-1)
                return F.silu(gate) * up

            for provider, fn in (("ssdk-cuda", lambda x, w, o, gate_up: silu_mul_cuda(o, x, w, True)),
                                 ("ssdk-unfused", unfused), ("torch", torch_swiglu)):
                runner.run(shape, provider, fn, make, nbytes, model=model, m=m, n=inter, k=k, layer="gate_up_silu")
    runner.write()


if __name__ == "__main__":
    main()
