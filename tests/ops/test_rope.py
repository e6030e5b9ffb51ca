"""RoPE (+ KV write), FlashInfer-style pos-ids RoPE and the fused Qwen-3 q/k-norm + RoPE (+ KV write): every backend vs
the reference, transformers' rotary embedding bit for bit (Llama-3.1 scaling beyond the original context,
Qwen-3 theta), strided q/k views of a fused qkv buffer, tree positions, opcheck, torch.compile, CUDA
graphs, bad inputs."""

import pytest
import torch

from ssdk.ops import (apply_llama31_rope_pos_ids_inplace, apply_rope, apply_rope_pos_ids_inplace,
                      apply_rope_with_cos_sin_cache_inplace, qk_norm_rope, rmsnorm, rope_cos_sin_cache, rope_inv_freq,
                      store_kv_cache, use_backend)
from ssdk.ref import rope as ref
from ssdk.testing.tolerances import assert_close

from ._params import BACKEND_DEVICES

LLAMA31_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}
EPS = 1e-6


def dtypes_for(backend: str, device: str) -> list[torch.dtype]:
    # The Triton interpreter truncates fp32 -> bf16 instead of rounding: exact checks use fp16/fp32 there.
    if backend == "triton" and device == "cpu":
        return [torch.float32, torch.float16]
    return [torch.float32, torch.float16, torch.bfloat16]


def tree_positions(num_tokens: int, max_position: int, device: str) -> torch.Tensor:
    """Speculative-tree-like positions: repeats, non-monotonic, both ends of the table."""
    pos = torch.randint(0, max_position, (num_tokens,))
    pos[: min(3, num_tokens)] = max_position - 1
    if num_tokens > 4:
        pos[4:8] = pos[3]
    return pos.to(device)


def configs(device: str):
    """(tokens, q heads, kv heads, head_size, rot): GQA, d64/d128, partial rotary, odd sizes (scalar path)."""
    if device == "cpu":
        return [(5, 3, 1, 64, 64), (3, 2, 2, 32, 16), (4, 2, 1, 10, 10)]
    return [(1, 32, 8, 128, 128), (7, 4, 2, 64, 64), (64, 32, 8, 128, 128), (33, 5, 1, 128, 64), (9, 3, 3, 96, 96),
            (5, 2, 1, 10, 6), (300, 8, 2, 256, 256), (2, 4, 4, 80, 80)]


def qkv_views(tokens, hq, hkv, head_size, dtype, device, pad=8):
    """q, k, v as strided 2-D views of one fused qkv projection output (as engines pass them)."""
    width = (hq + 2 * hkv) * head_size
    qkv = torch.randn(tokens, width + pad, dtype=dtype, device=device)
    q = qkv[:, : hq * head_size]
    k = qkv[:, hq * head_size: (hq + hkv) * head_size]
    v = qkv[:, (hq + hkv) * head_size: width]
    return qkv, q, k, v


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.cpu),
                                    pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("scaling,theta", [(LLAMA31_SCALING, 500000.0), (None, 1000000.0)], ids=["llama31", "qwen3"])
def test_cos_sin_cache_matches_transformers(device, scaling, theta):
    modeling_llama = pytest.importorskip("transformers.models.llama.modeling_llama", reason="transformers not installed")
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         max_position_embeddings=131072, rope_theta=theta, rope_scaling=scaling)
    emb = modeling_llama.LlamaRotaryEmbedding(config).to(device)
    torch.testing.assert_close(rope_inv_freq(128, theta, scaling, device), emb.inv_freq, atol=0, rtol=0)
    positions = torch.tensor([[0, 1, 8191, 8192, 8193, 20000, 32767, 40000]], device=device)
    cos, sin = emb(torch.empty(1, dtype=torch.float32, device=device), positions)
    table = rope_cos_sin_cache(128, 40001, theta, scaling, device=device)
    torch.testing.assert_close(table[positions[0], :64], cos[0, :, :64], atol=0, rtol=0)
    torch.testing.assert_close(table[positions[0], 64:], sin[0, :, :64], atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("scaling,theta", [(LLAMA31_SCALING, 500000.0), (None, 1000000.0)], ids=["llama31", "qwen3"])
def test_hf_exact_matches_transformers_bit_for_bit(backend, device, scaling, theta):
    modeling_llama = pytest.importorskip("transformers.models.llama.modeling_llama", reason="transformers not installed")
    from transformers import LlamaConfig

    hq, hkv, head_size = (4, 2, 64) if device == "cpu" else (32, 8, 128)
    config = LlamaConfig(hidden_size=hq * head_size, num_attention_heads=hq, num_key_value_heads=hkv,
                         head_dim=head_size, max_position_embeddings=32768, rope_theta=theta, rope_scaling=scaling)
    emb = modeling_llama.LlamaRotaryEmbedding(config).to(device)
    # Tree positions that straddle Llama-3.1's original 8192-token context.
    positions = torch.tensor([0, 7, 8191, 8192, 8192, 30000, 12345, 9000, 9000, 8191], device=device)
    table = rope_cos_sin_cache(head_size, 32768, theta, scaling, device=device)
    for dtype in dtypes_for(backend, device):
        if dtype == torch.float32:
            continue  # HF in fp32 has nothing to round; covered by the reference tests
        q = torch.randn(1, hq, positions.numel(), head_size, dtype=dtype, device=device)
        k = torch.randn(1, hkv, positions.numel(), head_size, dtype=dtype, device=device)
        cos, sin = emb(q, positions[None])
        hf_q, hf_k = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
        ours_q = q[0].transpose(0, 1).contiguous()
        ours_k = k[0].transpose(0, 1).reshape(positions.numel(), hkv * head_size)
        with use_backend(backend):
            apply_rope(positions, ours_q, ours_k, head_size, table, hf_exact=True)
        torch.testing.assert_close(ours_q, hf_q[0].transpose(0, 1), atol=0, rtol=0)
        torch.testing.assert_close(ours_k.view(-1, hkv, head_size), hf_k[0].transpose(0, 1), atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("hf_exact", [False, True])
def test_rope_matches_reference(backend, device, is_neox, hf_exact):
    for tokens, hq, hkv, head_size, rot in configs(device):
        table32 = rope_cos_sin_cache(head_size, 4096, 10000.0, device=device, rotary_dim=rot)
        for dtype in dtypes_for(backend, device):
            for table in (table32, table32.to(dtype)):
                positions = tree_positions(tokens, 4096, device)
                if dtype == torch.float16:
                    positions = positions.int()
                qkv, q, k, _ = qkv_views(tokens, hq, hkv, head_size, dtype, device)
                untouched = qkv[:, (hq + hkv) * head_size:].clone()
                expected_q, expected_k = ref.rope(positions, q, k, head_size, table, is_neox, hf_exact)
                with use_backend(backend):
                    apply_rope(positions, q, k, head_size, table, is_neox, hf_exact)
                assert_close(q.view(tokens, hq, head_size), expected_q)
                assert_close(k.view(tokens, hkv, head_size), expected_k)
                torch.testing.assert_close(qkv[:, (hq + hkv) * head_size:], untouched, atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_rope_3d_views_key_none_and_empty(backend, device):
    dtype, head_size = torch.float16, 64
    base = torch.randn(6, 5, head_size, dtype=dtype, device=device)
    q = base[:, 1:4]  # [6, 3, 64], token stride 5*64, head stride 64
    table = rope_cos_sin_cache(head_size, 64, 10000.0, device=device)
    positions = tree_positions(6, 64, device)
    expected_q, _ = ref.rope(positions, q, None, head_size, table)
    outside = base[:, [0, 4]].clone()
    with use_backend(backend):
        apply_rope(positions, q, None, head_size, table)
        apply_rope(positions[:0], q[:0], q[:0], head_size, table)
    assert_close(q, expected_q)
    torch.testing.assert_close(base[:, [0, 4]], outside, atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("interleave", [False, True])
def test_pos_ids_variants_match_the_table(backend, device, interleave):
    tokens, hq, hkv, head_size = (5, 2, 1, 64) if device == "cpu" else (37, 32, 8, 128)
    positions = torch.tensor([0, 3, 9000, 9000, 40000] + [17] * (tokens - 5), device=device)
    dtype = torch.float32
    for fn, table in (
            (lambda q, k: apply_rope_pos_ids_inplace(q, k, positions, interleave=interleave, rope_theta=5e5),
             rope_cos_sin_cache(head_size, 40001, 5e5, device=device)),
            (lambda q, k: apply_llama31_rope_pos_ids_inplace(q, k, positions, interleave=interleave),
             rope_cos_sin_cache(head_size, 40001, 5e5, LLAMA31_SCALING, device=device))):
        q = torch.randn(tokens, hq, head_size, dtype=dtype, device=device)
        k = torch.randn(tokens, hkv, head_size, dtype=dtype, device=device)
        expected_q, expected_k = ref.rope(positions, q, k, head_size, table, not interleave)
        with use_backend(backend):
            fn(q, k)
        # sincos in the kernel vs torch's cos/sin of the same fp32 angle: a few ulp (angles up to 4e4 rad).
        assert_close(q, expected_q, scale=4)
        assert_close(k, expected_k, scale=4)
    q = torch.randn(tokens, hq, head_size, dtype=dtype, device=device)
    k = torch.randn(tokens, hkv, head_size, dtype=dtype, device=device)
    table = rope_cos_sin_cache(head_size, 40001, 1e4, device=device, rotary_dim=head_size // 2)
    expected_q, expected_k = ref.rope(positions, q, k, head_size, table, True)
    with use_backend(backend):
        apply_rope_pos_ids_inplace(q, k, positions, rotary_dim=head_size // 2, rope_scale=1.0)
    assert_close(q, expected_q, scale=4)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_flashinfer_cos_sin_cache_alias(backend, device):
    positions = tree_positions(4, 32, device)
    q = torch.randn(4, 2 * 64, device=device)
    k = torch.randn(4, 64, device=device)
    table = rope_cos_sin_cache(64, 32, 1e4, device=device)
    expected_q, expected_k = ref.rope(positions, q, k, 64, table)
    with use_backend(backend):
        apply_rope_with_cos_sin_cache_inplace(positions, q, k, 64, table, is_neox=True)
    assert_close(q.view(4, 2, 64), expected_q)
    assert_close(k.view(4, 1, 64), expected_k)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("hf_exact", [False, True])
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
def test_qk_norm_rope_matches_unfused_sequence(backend, device, hf_exact, is_neox):
    shapes = [(5, 3, 1, 64), (3, 2, 2, 10)] if device == "cpu" else [(1, 32, 8, 128), (64, 32, 8, 128),
                                                                      (13, 4, 2, 64), (5, 3, 1, 96), (3, 2, 2, 10),
                                                                      (100, 8, 4, 128)]
    for tokens, hq, hkv, head_size in shapes:
        table = rope_cos_sin_cache(head_size, 4096, 1e6, device=device)
        page_size = 8
        num_pages = tokens // page_size + 2
        for dtype in dtypes_for(backend, device):
            positions = tree_positions(tokens, 4096, device)
            qkv, q, k, v = qkv_views(tokens, hq, hkv, head_size, dtype, device)
            q_weight = (1 + 0.3 * torch.randn(head_size, device=device)).to(dtype)
            k_weight = (1 + 0.3 * torch.randn(head_size, device=device)).to(dtype)
            slots = torch.randperm(num_pages * page_size, device=device)[:tokens]
            slots[tokens // 2] = -1
            k_cache = torch.full((num_pages, page_size, hkv, head_size), float("nan"), dtype=dtype, device=device)
            v_cache = k_cache.clone()
            expected_q, expected_k = ref.qk_norm_rope(positions, q, k, q_weight, k_weight, EPS, table, is_neox,
                                                      hf_exact)
            # The unfused ssdk sequence (same backend) on copies.
            uq = q.clone().view(tokens, hq, head_size)
            uk = k.clone().view(tokens, hkv, head_size)
            uk_cache, uv_cache = k_cache.clone(), v_cache.clone()
            with use_backend(backend):
                rmsnorm(uq, q_weight, EPS, out=uq, hf_exact=hf_exact)
                rmsnorm(uk, k_weight, EPS, out=uk, hf_exact=hf_exact)
                apply_rope(positions, uq, uk, head_size, table, is_neox, hf_exact)
                store_kv_cache(uk, v.view(tokens, hkv, head_size), uk_cache, uv_cache, slots)
                qk_norm_rope(positions, q, k, q_weight, k_weight, EPS, table, is_neox, hf_exact, v, k_cache, v_cache,
                             slots)
            q3, k3 = q.view(tokens, hq, head_size), k.view(tokens, hkv, head_size)
            assert_close(q3, expected_q)
            assert_close(k3, expected_k)
            written = slots[slots >= 0]
            pages, offsets = written // page_size, written % page_size
            torch.testing.assert_close(k_cache[pages, offsets], k3[slots >= 0], atol=0, rtol=0)
            torch.testing.assert_close(v_cache, uv_cache, atol=0, rtol=0, equal_nan=True)
            assert torch.isnan(k_cache).sum() == torch.isnan(uk_cache).sum() > 0, "wrote outside the given slots"
            # Reductions in another order can move rsqrt by an fp32 ulp: rare one-ulp flips in fp16/bf16.
            # A one-ulp flip in the normed value can grow to two ulps through hf_exact RoPE's roundings.
            for ours, theirs in ((q3, uq), (k3, uk)):
                assert_close(ours, theirs)
                if dtype == torch.float32:
                    continue
                mismatch = (ours != theirs).float().mean().item()
                assert mismatch < 1e-2, f"{mismatch:.2%} of elements differ from the unfused sequence"


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("hf_exact", [False, True])
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
def test_rope_kv_write_matches_rope_then_store(backend, device, hf_exact, is_neox):
    # Llama's fused prologue: apply_rope(..., value, k_cache, v_cache, slot_mapping) == apply_rope -> store_kv_cache,
    # bit for bit (the same rotation, then copies).
    shapes = [(5, 3, 1, 64), (3, 2, 2, 10)] if device == "cpu" else [(1, 32, 8, 128), (64, 32, 8, 128),
                                                                      (13, 4, 2, 64), (3, 2, 2, 10), (100, 8, 4, 128)]
    for tokens, hq, hkv, head_size in shapes:
        table = rope_cos_sin_cache(head_size, 4096, 5e5, LLAMA31_SCALING, device=device)
        page_size = 8
        num_pages = tokens // page_size + 2
        for dtype in dtypes_for(backend, device):
            positions = tree_positions(tokens, 4096, device)
            qkv, q, k, v = qkv_views(tokens, hq, hkv, head_size, dtype, device)
            slots = torch.randperm(num_pages * page_size, device=device)[:tokens]
            slots[tokens // 2] = -1
            k_cache = torch.full((num_pages, page_size, hkv, head_size), float("nan"), dtype=dtype, device=device)
            v_cache = k_cache.clone()
            uq, uk = q.clone(), k.clone()
            uk_cache, uv_cache = k_cache.clone(), v_cache.clone()
            with use_backend(backend):
                apply_rope(positions, uq, uk, head_size, table, is_neox, hf_exact)
                store_kv_cache(uk.view(tokens, hkv, head_size), v.view(tokens, hkv, head_size), uk_cache, uv_cache,
                               slots)
                apply_rope(positions, q, k, head_size, table, is_neox, hf_exact, value=v, k_cache=k_cache,
                           v_cache=v_cache, slot_mapping=slots)
            for ours, theirs in ((q, uq), (k, uk), (k_cache, uk_cache), (v_cache, uv_cache)):
                torch.testing.assert_close(ours, theirs, atol=0, rtol=0, equal_nan=True)
            assert torch.isnan(k_cache).sum() > 0, "wrote outside the given slots"


@pytest.mark.parametrize("backend,device", [p for p in BACKEND_DEVICES if p.values[0] != "torch"])
def test_positions_outside_the_table_poison_the_token(backend, device):
    # No host sync to raise from a kernel: the token's rotated dims become NaN instead of reading out of bounds.
    table = rope_cos_sin_cache(64, 16, 1e4, device=device)
    q = torch.randn(3, 64, device=device)
    positions = torch.tensor([1, 16, 2], device=device)
    with use_backend(backend):
        apply_rope(positions, q, None, 64, table)
    assert torch.isnan(q[1]).all() and not torch.isnan(q[[0, 2]]).any()


@pytest.mark.cpu
def test_torch_reference_raises_for_positions_outside_the_table():
    with pytest.raises(IndexError):
        apply_rope(torch.tensor([0, 16]), torch.randn(2, 64), None, 64, rope_cos_sin_cache(64, 16, 1e4))


@pytest.mark.cuda
def test_opcheck():
    positions = tree_positions(6, 64, "cuda")
    table = rope_cos_sin_cache(128, 64, 1e4, device="cuda")
    _, q, k, v = qkv_views(6, 4, 2, 128, torch.bfloat16, "cuda")
    w = torch.randn(128, dtype=torch.bfloat16, device="cuda")
    k_cache = torch.zeros(2, 8, 2, 128, dtype=torch.bfloat16, device="cuda")
    v_cache = torch.zeros_like(k_cache)
    slots = torch.tensor([3, 0, -1, 9, 15, 4], device="cuda", dtype=torch.int32)
    inv_freq = rope_inv_freq(128, 1e4, device="cuda")
    torch.library.opcheck(torch.ops.ssdk.rope.default, (positions, q, k, 128, table, True, False))
    torch.library.opcheck(torch.ops.ssdk.rope.default,
                          (positions, q, k, 128, table, True, True, v, k_cache, v_cache, slots))
    torch.library.opcheck(torch.ops.ssdk.rope_pos_ids.default, (positions, q, k, 128, inv_freq, False, True))
    torch.library.opcheck(torch.ops.ssdk.qk_norm_rope.default,
                          (positions, q, k, w, w, EPS, table, True, True, v, k_cache, v_cache, slots))
    torch.library.opcheck(torch.ops.ssdk.qk_norm_rope.default,
                          (positions, q, k, w, w, EPS, table, True, False, None, None, None, None))


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.cpu),
                                    pytest.param("cuda", marks=pytest.mark.cuda)])
def test_torch_compile_fullgraph(device):
    table = rope_cos_sin_cache(64, 32, 1e6, device=device)
    w = torch.randn(64, dtype=torch.bfloat16, device=device)

    def prologue(positions, qkv):
        q, k = qkv[:, :4 * 64], qkv[:, 4 * 64: 6 * 64]
        qk_norm_rope(positions, q, k, w, w, EPS, table)
        apply_rope(positions, q, k, 64, table)
        return qkv * 2

    positions = tree_positions(5, 32, device)
    qkv = torch.randn(5, 8 * 64, dtype=torch.bfloat16, device=device)
    expected_qkv = qkv.clone()
    expected = prologue(positions, expected_qkv)
    compiled = torch.compile(prologue, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
    got = compiled(positions, qkv)
    assert_close(got, expected)
    assert_close(qkv, expected_qkv)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_capture(backend):
    table = rope_cos_sin_cache(128, 1024, 1e6, device="cuda")
    positions = tree_positions(16, 1024, "cuda")
    _, q, k, v = qkv_views(16, 32, 8, 128, torch.bfloat16, "cuda")
    w = torch.randn(128, dtype=torch.bfloat16, device="cuda")
    k_cache = torch.zeros(4, 16, 8, 128, dtype=torch.bfloat16, device="cuda")
    v_cache = torch.zeros_like(k_cache)
    slots = torch.randperm(64, device="cuda")[:16]
    q0, k0 = q.clone(), k.clone()
    expected_q, expected_k = ref.qk_norm_rope(positions, q0, k0, w, w, EPS, table)
    with use_backend(backend):  # warm up: Triton compiles and inv_freq is built outside the capture
        qk_norm_rope(positions, q, k, w, w, EPS, table, value=v, k_cache=k_cache, v_cache=v_cache, slot_mapping=slots)
        apply_rope_pos_ids_inplace(q.view(16, 32, 128), k.view(16, 8, 128), positions)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            qk_norm_rope(positions, q, k, w, w, EPS, table, value=v, k_cache=k_cache, v_cache=v_cache,
                         slot_mapping=slots)
            apply_rope_pos_ids_inplace(q.view(16, 32, 128), k.view(16, 8, 128), positions)
    q.copy_(q0)
    k.copy_(k0)
    k_cache.zero_()
    graph.replay()
    expected_q2, expected_k2 = ref.rope(positions, expected_q, expected_k, 128,
                                        rope_cos_sin_cache(128, 1024, 1e4, device="cuda"))
    assert_close(q.view(16, 32, 128), expected_q2, scale=2)
    assert_close(k.view(16, 8, 128), expected_k2, scale=2)
    assert_close(k_cache[slots // 16, slots % 16], expected_k)


@pytest.mark.cpu
def test_bad_inputs_name_the_argument():
    table = rope_cos_sin_cache(64, 16, 1e4)
    pos = torch.arange(4)
    q, k = torch.randn(4, 128), torch.randn(4, 64)
    w = torch.randn(64)
    with pytest.raises(TypeError, match="positions has dtype torch.float32"):
        apply_rope(pos.float(), q, k, 64, table)
    with pytest.raises(ValueError, match=r"positions must have shape \[num_tokens\]"):
        apply_rope(pos[None], q, k, 64, table)
    with pytest.raises(ValueError, match="query must have shape"):
        apply_rope(pos[:3], q, k, 64, table)
    with pytest.raises(ValueError, match="query last dim 128 is not a multiple of head_size=48"):
        apply_rope(pos, q, k, 48, rope_cos_sin_cache(48, 16, 1e4))
    with pytest.raises(ValueError, match="key last dim must equal head_size"):
        apply_rope(pos, q, k.view(4, 2, 32), 64, table)
    with pytest.raises(TypeError, match="key has dtype torch.float16 but query"):
        apply_rope(pos, q, k.half(), 64, table)
    with pytest.raises(ValueError, match="query must be contiguous in its last dimension"):
        apply_rope(pos, torch.randn(128, 4).t(), k, 64, table)
    with pytest.raises(TypeError, match="cos_sin_cache has dtype torch.float16"):
        apply_rope(pos, q, k, 64, table.half())
    with pytest.raises(ValueError, match="cos_sin_cache must have shape"):
        apply_rope(pos, q, k, 64, rope_cos_sin_cache(128, 16, 1e4))
    with pytest.raises(ValueError, match="head_size must be an int"):
        apply_rope(pos, torch.randn(4, 1024), None, 512, table)
    with pytest.raises(TypeError, match="cos_sin_cache must be a torch.Tensor"):
        apply_rope(pos, q, k, 64, None)
    with pytest.raises(ValueError, match="rotates the whole head"):
        qk_norm_rope(pos, q, k, w, w, EPS, rope_cos_sin_cache(64, 16, 1e4, rotary_dim=32))
    with pytest.raises(ValueError, match=r"k_weight must have shape \(64,\)"):
        qk_norm_rope(pos, q, k, w, torch.randn(32), EPS, table)
    with pytest.raises(ValueError, match="must be given together"):
        qk_norm_rope(pos, q, k, w, w, EPS, table, value=k)
    with pytest.raises(TypeError, match="slot_mapping has dtype torch.float32"):
        qk_norm_rope(pos, q, k, w, w, EPS, table, value=k, k_cache=torch.zeros(2, 4, 1, 64),
                     v_cache=torch.zeros(2, 4, 1, 64), slot_mapping=pos.float())
    kv = dict(value=k, k_cache=torch.zeros(2, 4, 1, 64), v_cache=torch.zeros(2, 4, 1, 64), slot_mapping=pos)
    with pytest.raises(ValueError, match="must be given together"):
        apply_rope(pos, q, k, 64, table, value=k)
    with pytest.raises(ValueError, match="the KV write needs key"):
        apply_rope(pos, q, None, 64, table, **kv)
    with pytest.raises(ValueError, match="rotates the whole head"):
        apply_rope(pos, q, k, 64, rope_cos_sin_cache(64, 16, 1e4, rotary_dim=32), **kv)
    with pytest.raises(ValueError, match="rope_scaling type 'yarn' is not supported"):
        rope_cos_sin_cache(64, 16, 1e4, {"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match="lacks"):
        rope_cos_sin_cache(64, 16, 1e4, {"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(ValueError, match="q must have shape"):
        apply_rope_pos_ids_inplace(q, k, pos)


@pytest.mark.cuda
def test_bad_inputs_cuda():
    table = rope_cos_sin_cache(64, 16, 1e4, device="cuda")
    q = torch.randn(4, 128, device="cuda")
    with pytest.raises(ValueError, match="positions is on cpu but query is on cuda"):
        apply_rope(torch.arange(4), q, None, 64, table)
    # The C++ launcher checks too, for callers of torch.ops.ssdk directly.
    pos = torch.arange(4, device="cuda")
    with pytest.raises(RuntimeError, match="query has 4 tokens but positions has 3"):
        torch.ops.ssdk.rope(pos[:3], q, None, 64, table, True, False)
    with pytest.raises(RuntimeError, match="cos_sin_cache must have shape"):
        torch.ops.ssdk.rope(pos, q, None, 64, table[:, :63].contiguous(), True, False)
    with pytest.raises(RuntimeError, match="k_weight must have shape"):
        torch.ops.ssdk.qk_norm_rope(pos, q, q, table[0], table[0, :32], EPS, table, True, False, None, None, None,
                                    None)
    with pytest.raises(RuntimeError, match="query must be a CUDA tensor"):
        torch.ops.ssdk.rope(pos.cpu(), q.cpu(), None, 64, table.cpu(), True, False)
