"""build_tree_mask / ssd_draft_tree: hand-built trees with known answers, random batched trees vs the
reference on every backend (exact), SSD's draft-step masks, FlashInfer's packbits layout, CUDA graphs,
torch.compile, opcheck, bad inputs."""

import pytest
import torch

from ssdk.ops import build_tree_mask, packed_mask_bytes, ssd_draft_tree, use_backend
from ssdk.ref import tree as ref

from ._params import BACKEND_DEVICES


def random_parents(n: int, gen: torch.Generator, roots: bool = True) -> list[int]:
    """Topologically ordered random tree: node i hangs off a random earlier node (or the prefix)."""
    low = -1 if roots else 0
    return [-1] + [int(torch.randint(low, i, (1,), generator=gen)) for i in range(1, n)]


def batch_of(trees: list[list[int]], prefixes: list[int], device: str):
    parents = torch.tensor(sum(trees, []), dtype=torch.int32, device=device)
    sizes = [len(t) for t in trees]
    qo_indptr = torch.tensor([0] + torch.tensor(sizes, dtype=torch.int64).cumsum(0).tolist(), dtype=torch.int32,
                             device=device)
    return parents, qo_indptr, torch.tensor(prefixes, dtype=torch.int32, device=device)


def run(parents, qo_indptr, prefix_lens, words, backend, packed_rows=0, positions_dtype=torch.int32, spare=16):
    n_total, batch = parents.numel(), qo_indptr.numel() - 1
    device = parents.device
    size = packed_mask_bytes(qo_indptr, prefix_lens, packed_rows)
    outs = dict(positions=torch.full((n_total,), -7, dtype=positions_dtype, device=device),
                depth=torch.full((n_total,), -7, dtype=torch.int32, device=device),
                tree_mask=torch.full((n_total, words), -7, dtype=torch.int32, device=device),
                packed_mask=torch.full((size + spare,), 0xAB, dtype=torch.uint8, device=device),
                mask_indptr=torch.full((batch + 1,), -7, dtype=torch.int32, device=device))
    with use_backend(backend):
        result = build_tree_mask(parents, qo_indptr, prefix_lens, words, packed_rows=packed_rows, **outs)
    assert result.positions is outs["positions"] and result.packed_mask is outs["packed_mask"]
    assert (result.packed_mask[size:] == 0xAB).all(), "wrote past the packed segments"
    return result, size


def assert_matches_reference(parents, qo_indptr, prefix_lens, words, backend, packed_rows=0, spare=16):
    got, size = run(parents, qo_indptr, prefix_lens, words, backend, packed_rows, spare=spare)
    positions, depth, tree_mask, packed, mask_indptr = ref.build_tree_mask(parents.cpu(), qo_indptr.cpu(),
                                                                           prefix_lens.cpu(), words, packed_rows)
    torch.testing.assert_close(got.positions.cpu(), positions, atol=0, rtol=0)
    torch.testing.assert_close(got.depth.cpu(), depth, atol=0, rtol=0)
    torch.testing.assert_close(got.tree_mask.cpu(), tree_mask, atol=0, rtol=0)
    torch.testing.assert_close(got.mask_indptr.cpu(), mask_indptr, atol=0, rtol=0)
    torch.testing.assert_close(got.packed_mask[:size].cpu(), packed, atol=0, rtol=0)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_hand_built_tree(backend, device):
    # request 0: prefix 3, nodes 0 <- 1, 0 <- 2, 1 <- 3; request 1: prefix 10, a forest 0, 3 with 1, 2 under 0
    parents, qo_indptr, prefix_lens = batch_of([[-1, 0, 0, 1], [-1, 0, 1, -1]], [3, 10], device)
    got, size = run(parents, qo_indptr, prefix_lens, 1, backend)
    assert got.positions.tolist() == [3, 4, 4, 5, 10, 11, 12, 10]
    assert got.depth.tolist() == [0, 1, 1, 2, 0, 1, 2, 0]
    assert got.tree_mask[:, 0].tolist() == [0b1, 0b11, 0b101, 0b1011, 0b1, 0b11, 0b111, 0b1000]
    # request 0: 4 rows x 7 columns = 28 bits -> 4 bytes; request 1: 4 x 14 = 56 bits -> 7 bytes
    assert got.mask_indptr.tolist() == [0, 4, 11]
    rows0 = ["1111000", "1111100", "1111010", "1111101"]
    bits0 = "".join(rows0) + "0000"
    expected0 = [int(bits0[8 * k:8 * k + 8][::-1], 2) for k in range(4)]  # little-endian within a byte
    assert got.packed_mask[:4].tolist() == expected0
    rows1 = ["1" * 10 + r for r in ["1000", "1100", "1110", "0001"]]
    bits1 = "".join(rows1)
    assert got.packed_mask[4:11].tolist() == [int(bits1[8 * k:8 * k + 8][::-1], 2) for k in range(7)]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_random_trees_match_reference(backend, device):
    gen = torch.Generator().manual_seed(1)
    cpu = device == "cpu"
    cases = [  # (tree sizes, prefix lens, words, packed_rows)
        ([5, 1, 9], [0, 7, 33], 1, 0),
        ([32, 3], [8, 2], 1, 0),
        ([33, 70, 2], [5, 0, 19], 3, 0),
        ([21, 40], [13, 100], 2, 7),
    ]
    if not cpu:
        cases += [([133] * 16, [256 + 37 * i for i in range(16)], 5, 0),
                  ([1024, 3, 500], [4096, 1, 77], 32, 0),
                  ([int(torch.randint(1, 200, (1,), generator=gen)) for _ in range(64)],
                   [int(torch.randint(0, 5000, (1,), generator=gen)) for _ in range(64)], 7, 0),
                  ([150] * 4, [1000, 999, 998, 997], 5, 21)]
    for sizes, prefixes, words, packed_rows in cases:
        trees = [random_parents(n, gen) for n in sizes]
        parents, qo_indptr, prefix_lens = batch_of(trees, prefixes, device)
        assert_matches_reference(parents, qo_indptr, prefix_lens, words, backend, packed_rows)


@pytest.mark.parametrize("spare", [16, 1 << 20])
@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_oversized_packed_buffer(backend, device, spare):
    """The CUDA launcher sizes its grid from the buffer's capacity: a buffer far larger than the segments
    gives each CTA a range of many vectors (the geometry pass) and leaves the bytes past the segments."""
    gen = torch.Generator().manual_seed(6)
    sizes, prefixes = ([45, 7, 133], [256, 3, 1500]) if device == "cpu" else ([45, 7, 133, 1, 64], [256, 3, 1500, 0, 97])
    trees = [random_parents(n, gen) for n in sizes]
    parents, qo_indptr, prefix_lens = batch_of(trees, prefixes, device)
    for packed_rows in (0, 5):
        assert_matches_reference(parents, qo_indptr, prefix_lens, 5, backend, packed_rows, spare=spare)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_empty_requests_and_int64_positions(backend, device):
    parents, qo_indptr, prefix_lens = batch_of([[], [-1, 0], []], [4, 5, 6], device)
    assert_matches_reference(parents, qo_indptr, prefix_lens, 1, backend)
    got, _ = run(parents, qo_indptr, prefix_lens, 1, backend, positions_dtype=torch.int64)
    assert got.positions.dtype == torch.int64 and got.positions.tolist() == [5, 6]


def ssd_step_mask(K: int, fan_out: list[int], step: int, prefix: int) -> torch.Tensor:
    """SSD's draft-step custom mask (ssd/engine/helpers/mask_helpers.py): prefix ones, the glue chain
    visible up to each branch's glue node, one diagonal block per finished draft step."""
    width = sum(fan_out)
    glue = torch.tril(torch.ones(K + 1, K + 1, dtype=torch.bool))[torch.arange(K + 1).repeat_interleave(
        torch.tensor(fan_out))]
    diags = [torch.eye(width, dtype=torch.bool)] * (step + 1)
    return torch.cat([torch.ones(width, prefix, dtype=torch.bool), glue, *diags], dim=1)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_ssd_draft_tree_step_masks(backend, device):
    K, fan_out = 6, [3] * 7
    assert ssd_draft_tree(K, fan_out, K - 1).numel() == 133  # the tree size quoted by the SSD paper setup
    steps = [0, 2] if device == "cpu" else range(K)
    for fan in (fan_out, [4, 3, 3, 2, 2, 1, 0]):
        width = sum(fan)
        for step in steps:
            parents = ssd_draft_tree(K, fan, step, device=device)
            n = parents.numel()
            assert n == K + 1 + (step + 1) * width
            prefix = 17
            qo_indptr = torch.tensor([0, n], dtype=torch.int32, device=device)
            prefix_lens = torch.tensor([prefix], dtype=torch.int32, device=device)
            got, size = run(parents, qo_indptr, prefix_lens, (n + 31) // 32, backend, packed_rows=width)
            expected = ref.pack_bits_le(ssd_step_mask(K, fan, step, prefix))
            torch.testing.assert_close(got.packed_mask[:size].cpu(), expected, atol=0, rtol=0)


@pytest.mark.cpu
def test_ssd_draft_tree_bad_arguments():
    with pytest.raises(ValueError, match="fan_out must list K\\+1=4"):
        ssd_draft_tree(3, [2, 2], 0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        ssd_draft_tree(3, [1] * 4, -1)


@pytest.mark.cuda
def test_packed_layout_matches_flashinfer_segment_packbits():
    fi_quant = pytest.importorskip("flashinfer.quantization", reason="flashinfer not installed")
    gen = torch.Generator().manual_seed(3)
    trees = [random_parents(n, gen) for n in (21, 7, 133)]
    prefixes = [100, 3, 1027]
    parents, qo_indptr, prefix_lens = batch_of(trees, prefixes, "cuda")
    got, size = run(parents, qo_indptr, prefix_lens, 5, "cuda")
    anc, _ = ref.ancestor_matrix(parents.cpu(), qo_indptr.cpu())
    dense, bit_indptr = [], [0]
    for b, (n, prefix) in enumerate(zip([len(t) for t in trees], prefixes)):
        start = int(qo_indptr[b])
        m = torch.ones(n, prefix + n, dtype=torch.bool)
        m[:, prefix:] = anc[start:start + n, :n]
        dense.append(m.reshape(-1))
        bit_indptr.append(bit_indptr[-1] + m.numel())
    packed, indptr = fi_quant.segment_packbits(torch.cat(dense).cuda(), torch.tensor(bit_indptr, device="cuda"),
                                               bitorder="little")
    torch.testing.assert_close(got.mask_indptr.long(), indptr.long(), atol=0, rtol=0)
    torch.testing.assert_close(got.packed_mask[:size], packed, atol=0, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_capture(backend):
    gen = torch.Generator().manual_seed(4)
    parents, qo_indptr, prefix_lens = batch_of([random_parents(n, gen) for n in (40, 9, 77)], [500, 3, 64], "cuda")
    size = packed_mask_bytes(qo_indptr, prefix_lens)
    outs = dict(positions=torch.empty(126, dtype=torch.int32, device="cuda"),
                depth=torch.empty(126, dtype=torch.int32, device="cuda"),
                tree_mask=torch.empty(126, 3, dtype=torch.int32, device="cuda"),
                packed_mask=torch.empty(size, dtype=torch.uint8, device="cuda"),
                mask_indptr=torch.empty(4, dtype=torch.int32, device="cuda"))
    with use_backend(backend):
        build_tree_mask(parents, qo_indptr, prefix_lens, 3, **outs)  # warm up (Triton compiles)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            build_tree_mask(parents, qo_indptr, prefix_lens, 3, **outs)
    for t in outs.values():
        t.fill_(0)
    prefix_lens.sub_(2)  # inputs change between replays (segments shrink, so they fit): outputs follow
    graph.replay()
    expected = ref.build_tree_mask(parents.cpu(), qo_indptr.cpu(), prefix_lens.cpu(), 3)
    torch.testing.assert_close(outs["positions"].cpu(), expected[0], atol=0, rtol=0)
    torch.testing.assert_close(outs["tree_mask"].cpu(), expected[2], atol=0, rtol=0)
    torch.testing.assert_close(outs["mask_indptr"].cpu(), expected[4], atol=0, rtol=0)
    new_size = int(expected[4][-1])
    torch.testing.assert_close(outs["packed_mask"][:new_size].cpu(), expected[3], atol=0, rtol=0)


@pytest.mark.cuda
def test_opcheck_and_compile():
    gen = torch.Generator().manual_seed(5)
    parents, qo_indptr, prefix_lens = batch_of([random_parents(n, gen) for n in (12, 30)], [9, 40], "cuda")
    size = packed_mask_bytes(qo_indptr, prefix_lens)
    args = (parents, qo_indptr, prefix_lens, torch.empty(42, dtype=torch.int32, device="cuda"),
            torch.empty(42, dtype=torch.int32, device="cuda"), torch.empty(42, 1, dtype=torch.int32, device="cuda"),
            torch.empty(size, dtype=torch.uint8, device="cuda"), torch.empty(3, dtype=torch.int32, device="cuda"), 0)
    torch.library.opcheck(torch.ops.ssdk.build_tree_mask.default, args)

    def positions_plus_one(p, q, pl):
        return build_tree_mask(p, q, pl, 1, packed_capacity=size).positions + 1

    compiled = torch.compile(positions_plus_one, fullgraph=True)
    torch.testing.assert_close(compiled(parents, qo_indptr, prefix_lens), positions_plus_one(parents, qo_indptr,
                                                                                             prefix_lens))


@pytest.mark.cpu
def test_no_packed_and_bad_inputs():
    parents, qo_indptr, prefix_lens = batch_of([[-1, 0, 1]], [2], "cpu")
    result = build_tree_mask(parents, qo_indptr, prefix_lens, 1, packed=False)
    assert result.packed_mask is None and result.mask_indptr is None
    assert result.depth.tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="parents has dtype torch.int64"):
        build_tree_mask(parents.long(), qo_indptr, prefix_lens, 1)
    with pytest.raises(ValueError, match="prefix_lens must have shape \\(1,\\)"):
        build_tree_mask(parents, qo_indptr, prefix_lens.repeat(2), 1)
    with pytest.raises(ValueError, match="mask_words must be an int in \\[1, 32\\]"):
        build_tree_mask(parents, qo_indptr, prefix_lens, 0)
    with pytest.raises(ValueError, match="tree_mask must have shape \\(3, 2\\)"):
        build_tree_mask(parents, qo_indptr, prefix_lens, 2, tree_mask=torch.empty(3, 1, dtype=torch.int32))
    with pytest.raises(ValueError, match="parents\\[2\\] = 2 .* must be in \\[-1, 1\\]"):
        build_tree_mask(torch.tensor([-1, 0, 2], dtype=torch.int32), qo_indptr, prefix_lens, 1)
    with pytest.raises(ValueError, match="a request has 40 nodes but mask_words=1"):
        p, q, pl = batch_of([[-1] * 40], [0], "cpu")
        build_tree_mask(p, q, pl, 1)
