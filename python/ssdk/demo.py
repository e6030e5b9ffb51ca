"""``python -m ssdk.demo``: the newcomer's first run.

Runs ssdk's kernels through every backend this machine can use (CUDA extension, Triton, PyTorch) on
a Llama-3-8B-sized residual stream, checks each against the fp32 reference, and prints the timings.
"""

from __future__ import annotations

import time

import torch

import ssdk
from ssdk.ops import _backend, fused_add_rmsnorm, use_backend
from ssdk.ref import norm as ref


def _time_us(fn, device: torch.device, reps: int = 50) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1e6


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    tokens, hidden = (64, 4096)
    print(f"ssdk {ssdk.__version__} on {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}; "
          f"extension: {ssdk.EXTENSION_STATUS}")
    x = torch.randn(tokens, hidden, dtype=dtype, device=device)
    residual = torch.randn_like(x)
    weight = (1 + 0.1 * torch.randn(hidden, device=device)).to(dtype)
    expected_out, expected_residual = ref.fused_add_rmsnorm(x, residual, weight, 1e-5)
    print(f"fused_add_rmsnorm on [{tokens}, {hidden}] {dtype} (eager wall-clock per call, µs):")
    for backend in _backend.BACKENDS:
        reason = _backend.unavailable_reason("fused_add_rmsnorm", backend, device.type)
        if reason or (backend == "triton" and device.type != "cuda"):
            print(f"  {backend:7s} skipped: {reason or 'Triton runs on the CPU only in interpreter mode'}")
            continue
        h, r = x.clone(), residual.clone()
        with use_backend(backend):
            fused_add_rmsnorm(h, r, weight, 1e-5)
            err = (h.float() - expected_out.float()).abs().max().item()
            exact = torch.equal(r, expected_residual)
            us = _time_us(lambda: fused_add_rmsnorm(h, r, weight, 1e-5), device)
        print(f"  {backend:7s} {us:9.1f} µs   max |err| vs fp32 reference {err:.2e}   residual exact: {exact}")


if __name__ == "__main__":
    main()
