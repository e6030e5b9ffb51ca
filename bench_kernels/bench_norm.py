"""RMSNorm and fused residual-add RMSNorm vs torch eager, torch.compile, FlashInfer and Liger.

Byte model: rmsnorm reads x and writes out (2·T·H·s) plus the weight (H·s); fused_add_rmsnorm reads
x and residual and writes both (4·T·H·s) plus the weight. Floor = bytes / copy bandwidth.
"""

from __future__ import annotations

import torch

from _common import Runner, compiled, optional_module, parse_args
from ssdk.ops import get_impl
from ssdk.ref import norm as ref

EPS = 1e-6


def main() -> None:
    args = parse_args(__doc__)
    flashinfer = optional_module("flashinfer")
    liger_rms = optional_module("liger_kernel.ops.rms_norm")
    liger_add = optional_module("liger_kernel.ops.fused_add_rms_norm")
    tokens = [1, 64, 4096] if args.quick else [1, 16, 64, 256, 4096]
    hiddens = [4096] if args.quick else [2048, 4096, 8192]
    dtype = torch.bfloat16
    size = torch.finfo(dtype).bits // 8

    runner = Runner("norm", args)
    ssdk_cuda_add = get_impl("fused_add_rmsnorm", "cuda")
    ssdk_triton_add = get_impl("fused_add_rmsnorm", "triton")
    ssdk_cuda = get_impl("rmsnorm", "cuda")
    ssdk_triton = get_impl("rmsnorm", "triton")

    def eager_add(x, r, w):
        out, new_r = ref.fused_add_rmsnorm(x, r, w, EPS)
        r.copy_(new_r)
        x.copy_(out)

    compiled_add = compiled(eager_add)
    compiled_norm = compiled(lambda x, w: ref.rmsnorm(x, w, EPS))

    for hidden in hiddens:
        for t in tokens:
            shape = f"T={t},H={hidden}"

            def make_add():
                return (torch.randn(t, hidden, dtype=dtype, device="cuda"),
                        torch.randn(t, hidden, dtype=dtype, device="cuda"),
                        torch.randn(hidden, dtype=dtype, device="cuda"))

            def make_norm():
                x, _, w = make_add()
                return x, w, torch.empty_like(x)

            add_bytes = 4 * t * hidden * size + hidden * size
            norm_bytes = 2 * t * hidden * size + hidden * size
            op = "fused_add_rmsnorm"
            runner.run(shape, "ssdk-cuda", lambda x, r, w: ssdk_cuda_add(x, r, w, EPS, False), make_add, add_bytes, op)
            runner.run(shape, "ssdk-triton", lambda x, r, w: ssdk_triton_add(x, r, w, EPS, False), make_add,
                       add_bytes, op)
            runner.run(shape, "torch eager", eager_add, make_add, add_bytes, op)
            runner.run(shape, "torch.compile", compiled_add, make_add, add_bytes, op)
            if flashinfer:
                runner.run(shape, "flashinfer", lambda x, r, w: flashinfer.norm.fused_add_rmsnorm(x, r, w, EPS),
                           make_add, add_bytes, op)
            if liger_add:
                runner.run(shape, "liger", lambda x, r, w: liger_add.fused_add_rms_norm_forward(
                    x, r, w, EPS, 0.0, "llama"), make_add, add_bytes, op)
            op = "rmsnorm"
            runner.run(shape, "ssdk-cuda", lambda x, w, o: ssdk_cuda(o, x, w, EPS, False), make_norm, norm_bytes, op)
            runner.run(shape, "ssdk-triton", lambda x, w, o: ssdk_triton(o, x, w, EPS, False), make_norm,
                       norm_bytes, op)
            runner.run(shape, "torch eager", lambda x, w, o: ref.rmsnorm(x, w, EPS), make_norm, norm_bytes, op)
            runner.run(shape, "torch.compile", lambda x, w, o: compiled_norm(x, w), make_norm, norm_bytes, op)
            if flashinfer:
                runner.run(shape, "flashinfer", lambda x, w, o: flashinfer.norm.rmsnorm(x, w, EPS, out=o),
                           make_norm, norm_bytes, op)
            if liger_rms:
                runner.run(shape, "liger", lambda x, w, o: liger_rms.rms_norm_forward(x, w, EPS, 0.0, "llama", None),
                           make_norm, norm_bytes, op)
    runner.write()


if __name__ == "__main__":
    main()
