"""store_kv_cache: every backend vs the reference (integer-exact copies), page sizes, int32/int64 slots,
-1 skips, strided key/value views and strided caches (halves of a [P, 2, S, H, D] cache), opcheck,
torch.compile, CUDA graphs, bad inputs."""

import pytest
import torch

from ssdk.ops import store_kv_cache, use_backend
from ssdk.ref import kv_cache as ref

from ._params import BACKEND_DEVICES

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def configs(device: str):
    """(tokens, kv heads, head_dim, pages, page_size)."""
    if device == "cpu":
        return [(5, 2, 64, 3, 4), (3, 1, 10, 2, 16), (1, 3, 32, 1, 1)]
    return [(1, 8, 128, 64, 16), (64, 8, 128, 16, 16), (300, 8, 128, 128, 4), (17, 2, 64, 5, 7), (9, 3, 10, 3, 8),
            (4096, 8, 128, 512, 16)]


def make(tokens, heads, head_dim, pages, page_size, dtype, device, index_dtype):
    key = torch.randn(tokens, heads, head_dim, dtype=dtype, device=device)
    value = torch.randn(tokens, heads, head_dim, dtype=dtype, device=device)
    k_cache = torch.full((pages, page_size, heads, head_dim), float("nan"), dtype=dtype, device=device)
    v_cache = k_cache.clone()
    slots = torch.randperm(pages * page_size, device=device)[:tokens].to(index_dtype)
    slots[::3] = -1
    return key, value, k_cache, v_cache, slots


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_matches_reference(backend, device, index_dtype):
    for cfg in configs(device):
        for dtype in DTYPES:
            key, value, k_cache, v_cache, slots = make(*cfg, dtype, device, index_dtype)
            expected_k, expected_v = k_cache.clone(), v_cache.clone()
            ref.store_kv_cache(key, value, expected_k, expected_v, slots)
            with use_backend(backend):
                store_kv_cache(key, value, k_cache, v_cache, slots)
            torch.testing.assert_close(k_cache, expected_k, atol=0, rtol=0, equal_nan=True)
            torch.testing.assert_close(v_cache, expected_v, atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_strided_views_and_combined_cache(backend, device):
    tokens, heads, head_dim, pages, page_size = 6, 2, 64, 3, 4
    qkv = torch.randn(tokens, (4 + 2 * heads) * head_dim + 8, dtype=torch.float16, device=device)
    key = qkv[:, 4 * head_dim: (4 + heads) * head_dim].view(tokens, heads, head_dim)
    value = qkv[:, (4 + heads) * head_dim: (4 + 2 * heads) * head_dim].view(tokens, heads, head_dim)
    kv_cache = torch.full((pages, 2, page_size, heads, head_dim), float("nan"), dtype=torch.float16, device=device)
    expected = kv_cache.clone()
    slots = torch.tensor([11, 0, -1, 5, 4, 7], device=device)
    ref.store_kv_cache(key, value, expected[:, 0], expected[:, 1], slots)
    with use_backend(backend):
        store_kv_cache(key, value, kv_cache[:, 0], kv_cache[:, 1], slots)
    torch.testing.assert_close(kv_cache, expected, atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize("backend,device", [p for p in BACKEND_DEVICES if p.values[0] != "torch"])
def test_slots_beyond_the_cache_are_skipped(backend, device):
    key, value, k_cache, v_cache, _ = make(3, 1, 64, 2, 4, torch.float32, device, torch.int64)
    with use_backend(backend):
        store_kv_cache(key, value, k_cache, v_cache, torch.tensor([8, 1, 100], device=device))
    assert torch.equal(k_cache[0, 1], key[1]) and torch.isnan(k_cache).sum() == 7 * 64


@pytest.mark.cpu
def test_torch_reference_raises_for_slots_beyond_the_cache():
    key, value, k_cache, v_cache, _ = make(2, 1, 64, 2, 4, torch.float32, "cpu", torch.int64)
    with pytest.raises(IndexError, match="cache has 8 slots"):
        store_kv_cache(key, value, k_cache, v_cache, torch.tensor([0, 8]))


@pytest.mark.cuda
def test_opcheck():
    key, value, k_cache, v_cache, slots = make(8, 2, 128, 4, 4, torch.bfloat16, "cuda", torch.int32)
    k_cache.zero_()
    v_cache.zero_()
    torch.library.opcheck(torch.ops.ssdk.store_kv_cache.default, (key, value, k_cache, v_cache, slots))


@pytest.mark.cuda
def test_torch_compile_fullgraph():
    key, value, k_cache, v_cache, slots = make(8, 2, 128, 4, 4, torch.bfloat16, "cuda", torch.int64)
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    ref.store_kv_cache(key * 2, value, expected_k, expected_v, slots)

    def step(k, v):
        store_kv_cache(k * 2, v, k_cache, v_cache, slots)

    torch.compile(step, fullgraph=True)(key, value)
    torch.testing.assert_close(k_cache, expected_k, atol=0, rtol=0, equal_nan=True)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_capture(backend):
    key, value, k_cache, v_cache, slots = make(64, 8, 128, 16, 16, torch.bfloat16, "cuda", torch.int64)
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    ref.store_kv_cache(key, value, expected_k, expected_v, slots)
    with use_backend(backend):
        store_kv_cache(key, value, k_cache, v_cache, slots)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            store_kv_cache(key, value, k_cache, v_cache, slots)
    k_cache.fill_(float("nan"))
    v_cache.fill_(float("nan"))
    graph.replay()
    torch.testing.assert_close(k_cache, expected_k, atol=0, rtol=0, equal_nan=True)
    torch.testing.assert_close(v_cache, expected_v, atol=0, rtol=0, equal_nan=True)


@pytest.mark.cpu
def test_bad_inputs_name_the_argument():
    key, value, k_cache, v_cache, slots = make(4, 2, 64, 2, 4, torch.float32, "cpu", torch.int64)
    with pytest.raises(ValueError, match=r"key must have shape \[num_tokens, num_kv_heads, head_dim\]"):
        store_kv_cache(key.flatten(1), value, k_cache, v_cache, slots)
    with pytest.raises(ValueError, match=r"value must have shape \(4, 2, 64\)"):
        store_kv_cache(key, value[:3], k_cache, v_cache, slots)
    with pytest.raises(ValueError, match="k_cache heads/head_dim"):
        store_kv_cache(key, value, k_cache[:, :, :1], v_cache, slots)
    with pytest.raises(ValueError, match="k_cache must have shape"):
        store_kv_cache(key, value, k_cache[0], v_cache, slots)
    with pytest.raises(TypeError, match="v_cache has dtype torch.float16 but key"):
        store_kv_cache(key, value, k_cache, v_cache.half(), slots)
    with pytest.raises(TypeError, match="slot_mapping has dtype torch.float32"):
        store_kv_cache(key, value, k_cache, v_cache, slots.float())
    with pytest.raises(ValueError, match=r"slot_mapping must have shape \(4,\)"):
        store_kv_cache(key, value, k_cache, v_cache, slots[:2])
    with pytest.raises(ValueError, match="k_cache must be contiguous in its last dimension"):
        store_kv_cache(key, value, k_cache.transpose(2, 3).contiguous().transpose(2, 3), v_cache, slots)


@pytest.mark.cuda
def test_bad_inputs_cuda():
    key, value, k_cache, v_cache, slots = make(4, 2, 64, 2, 4, torch.float32, "cuda", torch.int64)
    with pytest.raises(ValueError, match="slot_mapping is on cpu but key is on cuda"):
        store_kv_cache(key, value, k_cache, v_cache, slots.cpu())
    with pytest.raises(RuntimeError, match="v_cache must have the shape of k_cache"):
        torch.ops.ssdk.store_kv_cache(key, value, k_cache, v_cache[:1], slots)
    with pytest.raises(RuntimeError, match="key must be a CUDA tensor"):
        torch.ops.ssdk.store_kv_cache(key.cpu(), value.cpu(), k_cache.cpu(), v_cache.cpu(), slots.cpu())
