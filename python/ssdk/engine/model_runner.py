"""One tensor-parallel rank: the model, its paged KV cache, CUDA graphs, and the sampler.

The runner executes a :class:`BatchSpec`, a host-side description of one forward pass in the
``ssdk.ops.tree_attention`` layout (any positions, any number of new tokens per request, optional
tree mask), so prefill, decode and speculative verification are the same call. Rolling back
speculative tokens needs no work here: the block manager frees pages and the stale slots are
overwritten later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .. import ops
from .config import EngineConfig
from .context import Context, attention_context
from .cuda_graphs import GraphRunner, PendingTokens
from .loader import iter_checkpoint, load_weights, synthetic_tensors
from .models import model_class
from .parallel import TPGroup, building
from .sequence import Sequence


@dataclass
class BatchSpec:
    """Host description of one forward pass (what every TP rank receives).

    Request b computes tokens ``input_ids[qo_indptr[b]:qo_indptr[b+1]]`` at ``positions`` (same rows)
    over ``prefix_lens[b]`` cached tokens; ``slot_mapping`` says where their K/V go (-1 = nowhere).
    ``logits_indices``: rows whose logits are returned (None = every row).
    """

    input_ids: list[int]
    positions: list[int]
    qo_indptr: list[int]
    prefix_lens: list[int]
    block_tables: list[list[int]]
    slot_mapping: list[int]
    logits_indices: list[int] | None = None
    tree_mask: torch.Tensor | None = None  # [N, W] int32 ancestor bits (CPU), None = causal

    @property
    def batch_size(self) -> int:
        return len(self.prefix_lens)

    @property
    def max_q_len(self) -> int:
        return max(b - a for a, b in zip(self.qo_indptr, self.qo_indptr[1:]))


class ModelRunner:
    def __init__(self, config: EngineConfig, rank: int = 0, tp: TPGroup | None = None, progress: bool = False,
                 extra_page_bytes: int = 0):
        """``extra_page_bytes``: bytes per KV page held elsewhere for every page of this cache (a draft
        model's cache indexed by the same block tables), counted when sizing the cache from free memory."""
        self.config = config
        self.extra_page_bytes = extra_page_bytes
        self.tp = tp or TPGroup()
        self.rank = rank
        mc = config.model_config
        self.device = torch.device(f"cuda:{rank}" if config.device == "cuda" else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dtype = config.dtype
        self.page_size = config.page_size
        self.max_pages_per_seq = -(-config.max_model_len // config.page_size)
        self.timings: dict[str, float] = {}
        self.graphs: GraphRunner | None = None  # set last: the warm-up pass runs eagerly
        self.extra_graphs: list[GraphRunner] = []  # e.g. speculative verify (q_len = K + 1)
        self._greedy_temps: dict[int, torch.Tensor] = {}
        self._sample_calls = 0
        self.flashinfer = None
        if config.attention_backend == "flashinfer":
            from .layers.flashinfer_backend import FlashInferAttention

            tp = self.tp.size
            self.flashinfer = FlashInferAttention(self.device, mc.num_heads // tp, mc.num_kv_heads // tp, mc.head_dim,
                                                  self.page_size, self.dtype, mc.head_dim ** -0.5)

        start = time.perf_counter()
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            with building(self.tp), torch.device(self.device):
                self.model = model_class(mc)(mc, config.max_model_len, self.device)
        finally:
            torch.set_default_dtype(default_dtype)
        for module in self.model.modules():  # layers with a batch-invariant path (EngineConfig.batch_invariant)
            if hasattr(module, "batch_invariant"):
                module.batch_invariant = config.batch_invariant
        if config.model.startswith("synthetic:"):
            tensors = synthetic_tensors(config.model, self.dtype, self.device, config.seed)
        else:
            tensors = iter_checkpoint(config.model, progress=progress and rank == 0)
        load_weights(self.model, tensors)
        self._sync()
        self.timings["load_s"] = time.perf_counter() - start

        start = time.perf_counter()
        self.num_kv_pages = self._plan_kv_pages()
        self.kv_cache = self._allocate_kv_cache(self.num_kv_pages)
        self._sync()
        self.timings["warmup_s"] = time.perf_counter() - start

        self.timings["graph_capture_s"] = 0.0
        if not config.enforce_eager:
            start = time.perf_counter()
            self.graphs = GraphRunner(self, max_batch=config.max_num_seqs, q_len=1, greedy=True)
            self.timings["graph_capture_s"] = time.perf_counter() - start

    # ------------------------------------------------------------------ memory

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def page_bytes(self) -> int:
        mc = self.config.model_config
        kv_heads = mc.num_kv_heads // self.tp.size
        return 2 * mc.num_layers * self.page_size * kv_heads * mc.head_dim * self.dtype.itemsize

    def _plan_kv_pages(self) -> int:
        """KV pages from the config, else from free GPU memory after a peak-activation warm-up pass."""
        cfg = self.config
        if cfg.num_kv_pages is not None:
            return cfg.num_kv_pages
        if self.device.type == "cpu":
            wanted = cfg.max_num_seqs * self.max_pages_per_seq
            return max(1, min(wanted, (2 << 30) // self.page_bytes()))
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        self._warmup()
        torch.cuda.empty_cache()  # hand the warm-up's freed blocks back, so "used" below is what stays allocated
        free, total = torch.cuda.mem_get_info(self.device)
        stats = torch.cuda.memory_stats(self.device)
        activations = stats["allocated_bytes.all.peak"] - stats["allocated_bytes.all.current"]
        budget = total * cfg.gpu_memory_utilization - (total - free) - activations
        pages = int(budget // (self.page_bytes() + self.extra_page_bytes))
        if self.tp.size > 1:  # every rank must hold the same pages (rank 0's block manager indexes them all)
            agreed = torch.tensor([pages], device=self.device)
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN, group=self.tp.group)
            pages = int(agreed.item())
        if pages < self.max_pages_per_seq:
            raise RuntimeError(f"ssdk: only {max(pages, 0)} KV pages fit in gpu_memory_utilization="
                               f"{cfg.gpu_memory_utilization} (one {cfg.max_model_len}-token sequence needs "
                               f"{self.max_pages_per_seq}); raise it or lower max_model_len")
        return pages

    def _warmup(self) -> None:
        """A prefill of max_num_batched_tokens tokens (no KV writes) to measure peak activation memory."""
        cfg = self.config
        tokens = min(cfg.max_num_batched_tokens, cfg.max_num_seqs * cfg.max_model_len)
        lens = []
        while tokens > 0 and len(lens) < cfg.max_num_seqs:
            lens.append(min(tokens, cfg.max_model_len))
            tokens -= lens[-1]
        pages = [-(-n // self.page_size) for n in lens]
        self.kv_cache = self._allocate_kv_cache(sum(pages))
        indptr, tables, first = [0], [], 0
        for n, p in zip(lens, pages):
            indptr.append(indptr[-1] + n)
            tables.append(list(range(first, first + p)))
            first += p
        total = indptr[-1]
        spec = BatchSpec(input_ids=[0] * total, positions=[i for n in lens for i in range(n)], qo_indptr=indptr,
                         prefix_lens=[0] * len(lens), block_tables=tables, slot_mapping=[-1] * total,
                         logits_indices=[i - 1 for i in indptr[1:]])
        self.execute(spec)
        self._sync()
        self.kv_cache = self._allocate_kv_cache(0)  # drop the scratch pages (the layers hold views of them)

    def resize_kv_cache(self, num_pages: int) -> None:
        """Reallocate the KV cache with ``num_pages`` pages (before any CUDA graph is captured)."""
        if self.graphs is not None or self.extra_graphs:
            raise RuntimeError("ssdk: resize_kv_cache after CUDA-graph capture would leave the graphs stale")
        self.kv_cache = self._allocate_kv_cache(0)
        self.kv_cache = self._allocate_kv_cache(num_pages)
        self.num_kv_pages = num_pages

    def release_graphs(self) -> None:
        """Destroy every captured CUDA graph, on this rank, before its process group is destroyed: NCCL's
        communicator teardown waits until each graph that captured one of its collectives is gone
        (destroy_process_group otherwise hangs; pytorch/pytorch#115388)."""
        for graphs in (self.graphs, *self.extra_graphs):
            if graphs is not None:
                graphs.release()
        self.graphs, self.extra_graphs = None, []
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def capture_graphs(self, q_len: int) -> None:
        """CUDA graphs for batches where every request computes ``q_len`` tokens (no-op when eager)."""
        if self.config.enforce_eager or any(g.q_len == q_len for g in (self.graphs, *self.extra_graphs) if g):
            return
        start = time.perf_counter()
        self.extra_graphs.append(GraphRunner(self, max_batch=self.config.max_num_seqs, q_len=q_len))
        self.timings["graph_capture_s"] += time.perf_counter() - start

    def _allocate_kv_cache(self, num_pages: int) -> torch.Tensor:
        mc = self.config.model_config
        shape = (2, mc.num_layers, num_pages, self.page_size, mc.num_kv_heads // self.tp.size, mc.head_dim)
        kv = torch.zeros(shape, dtype=self.dtype, device=self.device)  # zeros: padded rows read finite values
        layers = [m for m in self.model.modules() if hasattr(m, "k_cache")]
        for i, layer in enumerate(layers):
            layer.k_cache, layer.v_cache = kv[0, i], kv[1, i]
        return kv

    # ------------------------------------------------------------------ batches

    def spec_for(self, seqs: list[Sequence]) -> BatchSpec:
        """The forward pass of a scheduled step: each sequence computes its ``num_scheduled_tokens``
        tokens after ``num_computed_tokens``; logits for the sequences whose last token is computed."""
        ids, positions, indptr, prefix, tables, slots, logits = [], [], [0], [], [], [], []
        page = self.page_size
        for seq in seqs:
            start, n = seq.num_computed_tokens, seq.num_scheduled_tokens
            ids += seq.token_ids[start:start + n]
            positions += range(start, start + n)
            table = seq.block_table
            slots += [table[p // page] * page + p % page for p in range(start, start + n)]
            indptr.append(indptr[-1] + n)
            prefix.append(start)
            tables.append(table)
            if start + n == seq.num_tokens:
                logits.append(indptr[-1] - 1)
        every = len(logits) == len(ids)
        return BatchSpec(ids, positions, indptr, prefix, tables, slots, None if every else logits)

    def spec_ahead(self, seqs: list[Sequence]) -> BatchSpec:
        """The decode step after the one in flight: each sequence computes its pending token (sampled by
        the step in flight, not appended yet) at position ``num_tokens``; the token ids come from the device."""
        page = self.page_size
        positions = [seq.num_tokens for seq in seqs]
        tables = [seq.block_table for seq in seqs]
        slots = [t[p // page] * page + p % page for t, p in zip(tables, positions)]
        return BatchSpec([0] * len(seqs), positions, list(range(len(seqs) + 1)), positions, tables, slots)

    def _tensor(self, values: list[int], dtype: torch.dtype) -> torch.Tensor:
        host = torch.tensor(values, dtype=dtype, pin_memory=self.device.type == "cuda")
        return host.to(self.device, non_blocking=True)

    def make_context(self, spec: BatchSpec) -> Context:
        width = max(len(t) for t in spec.block_tables)
        tables = [t + [0] * (width - len(t)) for t in spec.block_tables]
        tree_mask = None if spec.tree_mask is None else spec.tree_mask.to(self.device, non_blocking=True)
        return Context(qo_indptr=self._tensor(spec.qo_indptr, torch.int32),
                       prefix_lens=self._tensor(spec.prefix_lens, torch.int32),
                       block_tables=self._tensor(tables, torch.int32).view(len(tables), width),
                       slot_mapping=self._tensor(spec.slot_mapping, torch.int64), max_q_len=spec.max_q_len,
                       tree_mask=tree_mask, flashinfer=self.flashinfer and self.flashinfer.plan(spec))

    # ------------------------------------------------------------------ forward

    @torch.inference_mode()
    def execute(self, spec: BatchSpec, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Run one forward pass; return [M, vocab] logits of the rows in ``spec.logits_indices``.

        ``input_ids``: optional device tensor of the token ids (any int dtype, ``len(spec.input_ids)``
        elements) used instead of ``spec.input_ids`` (tokens drafted on the device, no host round trip).
        """
        for graphs in (self.graphs, *self.extra_graphs):
            if graphs is not None and graphs.can_run(spec):
                return graphs.run(spec) if input_ids is None else graphs.run(spec, input_ids)
        if input_ids is not None:
            input_ids = input_ids.reshape(-1).long()
        else:
            input_ids = self._tensor(spec.input_ids, torch.int64)
        positions = self._tensor(spec.positions, torch.int64)
        with attention_context(self.make_context(spec)):
            hidden = self.model(input_ids, positions)
        if spec.logits_indices is not None:
            hidden = hidden[self._tensor(spec.logits_indices, torch.int64)]
        return self.model.compute_logits(hidden)

    @torch.inference_mode()
    def launch_greedy(self, spec: BatchSpec, input_ids: torch.Tensor | None = None) -> PendingTokens | None:
        """Launch a greedy decode step as one CUDA-graph replay with the argmax inside (no host sync);
        None when the graphs cannot run ``spec``. ``input_ids``: as in :meth:`execute`."""
        if self.graphs is None or not self.graphs.greedy or not self.graphs.can_run(spec):
            return None
        return self.graphs.launch_greedy(spec, input_ids)

    @torch.inference_mode()
    def sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """One token per row of ``logits`` (row i belongs to seqs[i]) through ``ssdk.ops.sample_tokens``.

        Requests with a seed draw from Philox(seed, offset = tokens generated so far), so their output
        does not depend on the batch; the others share the engine seed and a per-call offset. Requests
        that ask for logprobs get them appended to ``seq.logprobs``.
        """
        tokens = self._sample(logits, seqs)
        for i, seq in enumerate(seqs):
            if seq.params.logprobs:
                logprobs = torch.log_softmax(logits[i].float(), dim=-1)
                top = logprobs.topk(seq.params.logprobs)
                entry = dict(zip(top.indices.tolist(), top.values.tolist()))
                entry[tokens[i]] = logprobs[tokens[i]].item()
                seq.logprobs.append(entry)
        return tokens

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        batch = logits.shape[0]
        params = [s.params for s in seqs]
        self._sample_calls += 1
        if all(p.greedy for p in params):
            if batch not in self._greedy_temps:
                self._greedy_temps[batch] = torch.zeros(batch, dtype=torch.float32, device=self.device)
            return ops.sample_tokens(logits, self._greedy_temps[batch]).tolist()
        temperature = self._tensor([float(p.temperature) for p in params], torch.float32)
        top_k = self._tensor([p.top_k for p in params], torch.int32) if any(p.top_k > 0 for p in params) else None
        top_p = self._tensor([float(p.top_p) for p in params], torch.float32) if any(
            p.top_p < 1 for p in params) else None
        out = ops.sample_tokens(logits, temperature, top_k, top_p, seed=self.config.seed, offset=self._sample_calls)
        for i, (seq, p) in enumerate(zip(seqs, params)):
            if p.seed is not None and not p.greedy:
                row = slice(i, i + 1)
                ops.sample_tokens(logits[row], temperature[row], None if top_k is None else top_k[row],
                                  None if top_p is None else top_p[row], seed=p.seed, offset=seq.num_output_tokens,
                                  out=out[row])
        return out.tolist()
