"""RoPE (+ KV write: Llama's prologue), FlashInfer-style pos-ids RoPE and the fused Qwen-3 q/k-norm + RoPE
(+ KV write).

Shapes: 32 q / 8 kv heads, head_dim 128 (Llama-3.1-8B and Qwen-3-8B share this attention shape; the
angle table differs, the cost does not), tokens {1, 16, 64, 256, 4096}, bf16, fp32 cos/sin table,
random positions in [0, 8192).
Byte model: q and k read + written (2·T·(Hq + Hkv)·D·s) + one fp32 table row per token (2·rot·4) +
positions (8·T). The unfused Qwen-3 prologue (rmsnorm q, rmsnorm k, rope) moves 2x that; the fused KV
variants add k written to the cache and v read + written (3·T·Hkv·D·s); unfused, store_kv_cache also
re-reads k. Floor = bytes / copy bandwidth.
Liger's rope takes per-token cos/sin [T, D] computed beforehand (HF computes them once per forward), so
its rows exclude the gather.
"""

from __future__ import annotations

import torch

from _common import Runner, compiled_dynamic, optional_module, parse_args
from ssdk.ops import get_impl, rope_cos_sin_cache, rope_inv_freq
from ssdk.ref import rope as ref

HQ, HKV, D, MAX_POS, EPS = 32, 8, 128, 8192, 1e-6


def main() -> None:
    args = parse_args(__doc__)
    flashinfer = optional_module("flashinfer")
    liger_rope = optional_module("liger_kernel.ops.rope")
    tokens = [1, 64, 4096] if args.quick else [1, 16, 64, 256, 4096]
    dtype, s = torch.bfloat16, 2
    runner = Runner("rope", args)
    table = rope_cos_sin_cache(D, MAX_POS, 5e5, device="cuda")
    inv_freq = rope_inv_freq(D, 1e4, device="cuda")
    qk_table = rope_cos_sin_cache(D, MAX_POS, 1e6, device="cuda")
    cuda_rope, triton_rope = get_impl("rope", "cuda"), get_impl("rope", "triton")
    cuda_pos, triton_pos = get_impl("rope_pos_ids", "cuda"), get_impl("rope_pos_ids", "triton")
    cuda_fused, triton_fused = get_impl("qk_norm_rope", "cuda"), get_impl("qk_norm_rope", "triton")
    cuda_norm, cuda_kv = get_impl("rmsnorm", "cuda"), get_impl("store_kv_cache", "cuda")
    compiled_rope = compiled_dynamic(lambda p, q, k: ref.rope_inplace(p, q, k, D, table, True, False))
    compiled_fused = compiled_dynamic(lambda p, q, k, qw, kw: ref.qk_norm_rope_inplace(
        p, q, k, qw, kw, EPS, qk_table, True, False, None, None, None, None))

    def unfused(p, q, k, qw, kw):
        q3, k3 = q.view(q.shape[0], HQ, D), k.view(k.shape[0], HKV, D)
        cuda_norm(q3, q3, qw, EPS, False)
        cuda_norm(k3, k3, kw, EPS, False)
        cuda_rope(p, q, k, D, qk_table, True, False)

    def rope_then_store(p, q, k, v, kc, vc, slots):
        cuda_rope(p, q, k, D, table, True, False)
        cuda_kv(k.view(k.shape[0], HKV, D), v.view(v.shape[0], HKV, D), kc, vc, slots)

    def unfused_kv(p, q, k, qw, kw, v, kc, vc, slots):
        unfused(p, q, k, qw, kw)
        cuda_kv(k.view(k.shape[0], HKV, D), v.view(v.shape[0], HKV, D), kc, vc, slots)

    for t in tokens:
        shape = f"T={t},Hq={HQ},Hkv={HKV},D={D}"

        def make():
            return (torch.randint(0, MAX_POS, (t,), device="cuda"),
                    torch.randn(t, HQ * D, dtype=dtype, device="cuda"),
                    torch.randn(t, HKV * D, dtype=dtype, device="cuda"))

        def make_norm():
            return (*make(), torch.randn(D, dtype=dtype, device="cuda"), torch.randn(D, dtype=dtype, device="cuda"))

        def kv_write_args():
            pages = (t + 15) // 16
            return (torch.randn(t, HKV * D, dtype=dtype, device="cuda"),
                    torch.randn(pages, 16, HKV, D, dtype=dtype, device="cuda"),
                    torch.randn(pages, 16, HKV, D, dtype=dtype, device="cuda"),
                    torch.randperm(pages * 16, device="cuda")[:t])

        def make_kv():
            return (*make_norm(), *kv_write_args())

        def make_rope_kv():
            return (*make(), *kv_write_args())

        rope_bytes = 2 * t * (HQ + HKV) * D * s + t * (2 * D * 4 + 8)
        op = "rope"
        runner.run(shape, "ssdk-cuda", lambda p, q, k: cuda_rope(p, q, k, D, table, True, False), make, rope_bytes, op)
        runner.run(shape, "ssdk-triton", lambda p, q, k: triton_rope(p, q, k, D, table, True, False), make,
                   rope_bytes, op)
        runner.run(shape, "torch", lambda p, q, k: ref.rope_inplace(p, q, k, D, table, True, False), make,
                   rope_bytes, op)
        runner.run(shape, "torch.compile", compiled_rope, make, rope_bytes, op)
        if flashinfer:
            runner.run(shape, "flashinfer", lambda p, q, k: flashinfer.rope.apply_rope_with_cos_sin_cache_inplace(
                p, q, k, D, table, True), make, rope_bytes, op)
        if liger_rope:
            def make_liger():
                p, q, k = make()
                cos, sin = ref.cos_sin_from_cache(p, table)
                # [1, H, T, D] views of [T, H, D] storage: liger's transpose back is free.
                return (q.view(t, HQ, D).permute(1, 0, 2)[None], k.view(t, HKV, D).permute(1, 0, 2)[None],
                        torch.cat((cos, cos), -1)[None], torch.cat((sin, sin), -1)[None])

            runner.run(shape, "liger", lambda q, k, c, s_: liger_rope.rope_forward(q, k, c, s_), make_liger,
                       rope_bytes, op, note="cos/sin [T, D] precomputed, not timed")

        op = "rope_pos_ids"
        pos_bytes = 2 * t * (HQ + HKV) * D * s + 8 * t
        def make_pos():
            p, q, k = make()
            return p, q.view(t, HQ, D), k.view(t, HKV, D)

        runner.run(shape, "ssdk-cuda", lambda p, q, k: cuda_pos(p, q, k, D, inv_freq, True, False), make_pos,
                   pos_bytes, op)
        runner.run(shape, "ssdk-triton", lambda p, q, k: triton_pos(p, q, k, D, inv_freq, True, False), make_pos,
                   pos_bytes, op)
        if flashinfer:
            runner.run(shape, "flashinfer", lambda p, q, k: flashinfer.rope.apply_rope_pos_ids_inplace(q, k, p),
                       make_pos, pos_bytes, op)

        op = "qk_norm_rope"
        runner.run(shape, "ssdk-cuda", lambda p, q, k, qw, kw: cuda_fused(
            p, q, k, qw, kw, EPS, qk_table, True, False, None, None, None, None), make_norm, rope_bytes, op)
        runner.run(shape, "ssdk-cuda-unfused", unfused, make_norm, 2 * rope_bytes, op)
        runner.run(shape, "ssdk-triton", lambda p, q, k, qw, kw: triton_fused(
            p, q, k, qw, kw, EPS, qk_table, True, False, None, None, None, None), make_norm, rope_bytes, op)
        runner.run(shape, "torch", lambda p, q, k, qw, kw: ref.qk_norm_rope_inplace(
            p, q, k, qw, kw, EPS, qk_table, True, False, None, None, None, None), make_norm, rope_bytes, op)
        runner.run(shape, "torch.compile", compiled_fused, make_norm, rope_bytes, op)
        if flashinfer:
            def flashinfer_unfused(p, q, k, qw, kw):
                flashinfer.norm.rmsnorm(q.view(-1, D), qw, EPS, out=q.view(-1, D))
                flashinfer.norm.rmsnorm(k.view(-1, D), kw, EPS, out=k.view(-1, D))
                flashinfer.rope.apply_rope_with_cos_sin_cache_inplace(p, q, k, D, qk_table, True)

            runner.run(shape, "flashinfer-unfused", flashinfer_unfused, make_norm, 2 * rope_bytes, op)

        op = "rope_kv"  # Llama's prologue: RoPE + paged KV write in one kernel vs rope -> store_kv_cache
        kv_bytes = rope_bytes + 3 * t * HKV * D * s
        runner.run(shape, "ssdk-cuda", lambda p, q, k, v, kc, vc, sl: cuda_rope(
            p, q, k, D, table, True, False, v, kc, vc, sl), make_rope_kv, kv_bytes, op)
        runner.run(shape, "ssdk-cuda-unfused", rope_then_store, make_rope_kv, rope_bytes + 4 * t * HKV * D * s, op)
        runner.run(shape, "ssdk-triton", lambda p, q, k, v, kc, vc, sl: triton_rope(
            p, q, k, D, table, True, False, v, kc, vc, sl), make_rope_kv, kv_bytes, op)

        op = "qk_norm_rope_kv"
        kv_bytes = rope_bytes + 3 * t * HKV * D * s
        runner.run(shape, "ssdk-cuda", lambda p, q, k, qw, kw, v, kc, vc, sl: cuda_fused(
            p, q, k, qw, kw, EPS, qk_table, True, False, v, kc, vc, sl), make_kv, kv_bytes, op)
        runner.run(shape, "ssdk-cuda-unfused", unfused_kv, make_kv, 2 * rope_bytes + 4 * t * HKV * D * s, op)
        runner.run(shape, "ssdk-triton", lambda p, q, k, qw, kw, v, kc, vc, sl: triton_fused(
            p, q, k, qw, kw, EPS, qk_table, True, False, v, kc, vc, sl), make_kv, kv_bytes, op)
    runner.write()


if __name__ == "__main__":
    main()
