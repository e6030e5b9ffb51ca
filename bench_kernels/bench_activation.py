"""silu_and_mul (SwiGLU gate) vs torch eager, torch.compile, FlashInfer and Liger.

Shapes: tokens {1, 16, 64, 256, 4096} x intermediate 14336 (Llama-3.1-8B) and 12288 (Qwen-3-8B), bf16.
Byte model: read [T, 2d], write [T, d]: 3·T·d·s. Floor = bytes / copy bandwidth.
Liger's swiglu takes gate and up as two tensors (separate projections); same bytes.
"""

from __future__ import annotations

import torch

from _common import Runner, compiled_dynamic, optional_module, parse_args
from ssdk.ops import get_impl
from ssdk.ref import activation as ref


def main() -> None:
    args = parse_args(__doc__)
    flashinfer = optional_module("flashinfer")
    liger = optional_module("liger_kernel.ops.swiglu")
    tokens = [1, 64, 4096] if args.quick else [1, 16, 64, 256, 4096]
    dtype, s = torch.bfloat16, 2
    runner = Runner("activation", args)
    ssdk_cuda, ssdk_triton = get_impl("silu_and_mul", "cuda"), get_impl("silu_and_mul", "triton")
    compiled_ref = compiled_dynamic(lambda x: ref.silu_and_mul(x))

    def eager(x):  # what a PyTorch model runs: F.silu(gate) * up
        d = x.shape[-1] // 2
        return torch.nn.functional.silu(x[..., :d]) * x[..., d:]

    for model, d in (("llama3.1-8b", 14336), ("qwen3-8b", 12288)):
        for t in tokens:
            shape = f"T={t},d={d}"
            nbytes = 3 * t * d * s

            def make():
                return (torch.randn(t, 2 * d, dtype=dtype, device="cuda"),
                        torch.empty(t, d, dtype=dtype, device="cuda"))

            def run(provider, fn, make_args=make):
                runner.run(shape, provider, fn, make_args, nbytes, "silu_and_mul", model=model)

            run("ssdk-cuda", lambda x, o: ssdk_cuda(o, x, False))
            run("ssdk-triton", lambda x, o: ssdk_triton(o, x, False))
            run("torch", lambda x, o: eager(x))
            run("torch.compile", lambda x, o: compiled_ref(x))
            if flashinfer:
                run("flashinfer", lambda x, o: flashinfer.activation.silu_and_mul(x, out=o))
            if liger:
                run("liger", liger.swiglu_forward, lambda: (torch.randn(t, d, dtype=dtype, device="cuda"),
                                                           torch.randn(t, d, dtype=dtype, device="cuda")))
    runner.write()


if __name__ == "__main__":
    main()
