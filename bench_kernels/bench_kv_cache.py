"""Paged KV-cache store vs torch eager (index_copy_), torch.compile and FlashInfer's append_paged_kv_cache.

Shapes: tokens {1, 16, 64, 256, 4096} appended to one sequence of 8 kv heads x head_dim 128 (Llama-3.1-8B
and Qwen-3-8B), page size 16, bf16, a 1024-token prefix already in the cache.
Byte model: k and v read and written, 4·T·Hkv·D·s (+ slots). Floor = bytes / copy bandwidth.
FlashInfer addresses the same slots through (batch_indices, positions, kv_indices, kv_indptr, last_page_len).
"""

from __future__ import annotations

import torch

from _common import Runner, compiled_dynamic, optional_module, parse_args
from ssdk.ops import get_impl

HKV, D, PAGE, PREFIX = 8, 128, 16, 1024


def main() -> None:
    args = parse_args(__doc__)
    flashinfer = optional_module("flashinfer")
    tokens = [1, 64, 4096] if args.quick else [1, 16, 64, 256, 4096]
    dtype, s = torch.bfloat16, 2
    runner = Runner("kv_cache", args)
    ssdk_cuda, ssdk_triton = get_impl("store_kv_cache", "cuda"), get_impl("store_kv_cache", "triton")

    def eager(k, v, kc, vc, slots):
        kc.view(-1, HKV, D).index_copy_(0, slots, k)
        vc.view(-1, HKV, D).index_copy_(0, slots, v)

    compiled_eager = compiled_dynamic(eager)
    for t in tokens:
        shape = f"T={t},Hkv={HKV},D={D},page={PAGE}"
        pages = (PREFIX + t + PAGE - 1) // PAGE
        nbytes = 4 * t * HKV * D * s + 8 * t

        def make():
            return (torch.randn(t, HKV, D, dtype=dtype, device="cuda"),
                    torch.randn(t, HKV, D, dtype=dtype, device="cuda"),
                    torch.randn(pages, PAGE, HKV, D, dtype=dtype, device="cuda"),
                    torch.randn(pages, PAGE, HKV, D, dtype=dtype, device="cuda"),
                    torch.arange(PREFIX, PREFIX + t, device="cuda"))

        runner.run(shape, "ssdk-cuda", ssdk_cuda, make, nbytes, "store_kv_cache")
        runner.run(shape, "ssdk-triton", ssdk_triton, make, nbytes, "store_kv_cache")
        runner.run(shape, "torch", eager, make, nbytes, "store_kv_cache")
        runner.run(shape, "torch.compile", compiled_eager, make, nbytes, "store_kv_cache")
        if flashinfer:
            def make_flashinfer():
                k, v, kc, vc, slots = make()
                meta = (torch.zeros(t, dtype=torch.int32, device="cuda"), slots.int(),
                        torch.arange(pages, dtype=torch.int32, device="cuda"),
                        torch.tensor([0, pages], dtype=torch.int32, device="cuda"),
                        torch.tensor([PREFIX + t - (pages - 1) * PAGE], dtype=torch.int32, device="cuda"))
                return (k, v, kc, vc, *meta)

            runner.run(shape, "flashinfer", lambda k, v, kc, vc, b, p, idx, indptr, last:
                       flashinfer.page.append_paged_kv_cache(k, v, b, p, (kc, vc), idx, indptr, last, "NHD"),
                       make_flashinfer, nbytes, "store_kv_cache")
    runner.write()


if __name__ == "__main__":
    main()
