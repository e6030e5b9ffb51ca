"""build_tree_mask on SSD draft trees vs plain torch and torch + FlashInfer's segment_packbits.

Trees: SSD's draft tree after the last draft step (glue chain of K+1, fan-out F at every glue node,
K draft steps: n = K+1 + K*F*(K+1) nodes, 133 at K=6, F=3), B requests with the same prefix length.
Byte model: what ssdk writes — the packed FlashInfer mask (sum of ceil(n*(prefix+n)/8)), the compact
mask (n*W*4), positions and depth (8n) — plus the parents read; floor = bytes / copy bandwidth.
Providers: ssdk-cuda, ssdk-triton, torch (pointer-doubling dense mask + packbits, one padded bit
stream), flashinfer (the same dense mask packed per request by flashinfer.quantization.segment_packbits).
"""

from __future__ import annotations

import torch

from _common import Runner, optional_module, parse_args
from ssdk.ops import get_impl, packed_mask_bytes, ssd_draft_tree
from ssdk.ref import tree as ref


def main() -> None:
    args = parse_args(__doc__)
    fi_quant = optional_module("flashinfer.quantization")
    if args.quick:
        grid = [(b, k, f, p) for b in (1, 16, 64) for (k, f, p) in ((6, 3, 1024), (4, 2, 256), (8, 3, 4096))]
    else:
        grid = [(b, k, f, p) for b in (1, 4, 16, 64) for k in (4, 6, 8) for f in (2, 3) for p in (256, 1024, 4096)]
    runner = Runner("tree_mask", args)
    cuda_impl = get_impl("build_tree_mask", "cuda")
    triton_impl = get_impl("build_tree_mask", "triton")
    for batch, k, fan, prefix in grid:
        tree = ssd_draft_tree(k, [fan] * (k + 1), k - 1).tolist()
        n = len(tree)
        words = (n + 31) // 32
        parents = torch.tensor(tree * batch, dtype=torch.int32, device="cuda")
        qo_indptr = torch.arange(0, n * batch + 1, n, dtype=torch.int32, device="cuda")
        prefix_lens = torch.full((batch,), prefix, dtype=torch.int32, device="cuda")
        size = packed_mask_bytes(qo_indptr, prefix_lens)
        nbytes = size + n * batch * (words * 4 + 12)
        shape = f"B={batch},K={k},F={fan},prefix={prefix},n={n}"

        def make():
            return (parents, qo_indptr, prefix_lens, torch.empty(n * batch, dtype=torch.int32, device="cuda"),
                    torch.empty(n * batch, dtype=torch.int32, device="cuda"),
                    torch.empty(n * batch, words, dtype=torch.int32, device="cuda"),
                    torch.empty(size, dtype=torch.uint8, device="cuda"),
                    torch.empty(batch + 1, dtype=torch.int32, device="cuda"))

        extra = dict(batch=batch, k=k, f=fan, prefix=prefix, nodes=n)
        runner.run(shape, "ssdk-cuda", lambda *a: cuda_impl(*a, 0), make, nbytes, **extra)
        runner.run(shape, "ssdk-triton", lambda *a: triton_impl(*a, 0), make, nbytes, **extra)

        def torch_dense(p, q, pl, *outs):
            positions, dense = ref.dense_tree_mask(p, q, pl, n, prefix)
            return positions, ref.pack_bits_le(dense)

        runner.run(shape, "torch", torch_dense, make, nbytes, **extra)
        if fi_quant is not None:
            bit_indptr = torch.arange(0, batch + 1, device="cuda", dtype=torch.int32) * (n * (prefix + n))

            def fi_dense(p, q, pl, *outs):
                positions, dense = ref.dense_tree_mask(p, q, pl, n, prefix)
                return positions, fi_quant.segment_packbits(dense.view(-1), bit_indptr, bitorder="little")

            runner.run(shape, "flashinfer", fi_dense, make, nbytes, **extra)
    runner.write()


if __name__ == "__main__":
    main()
