"""attention_backend="flashinfer": FlashInfer's paged prefill/append kernel as the alternative backend.

One ``BatchPrefillWithPagedKVCacheWrapper`` is planned per step on the host (it serves prefill chunks and
decode alike, causal with the prefix visible) and shared by every layer; the paged cache is ssdk's own
[num_pages, page_size, Hkv, D] pair (FlashInfer's NHD layout). Eager mode only: FlashInfer's planning
syncs with the host, so the engine does not capture CUDA graphs with this backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..model_runner import BatchSpec


class FlashInferAttention:
    def __init__(self, device: torch.device, num_qo_heads: int, num_kv_heads: int, head_dim: int, page_size: int,
                 dtype: torch.dtype, sm_scale: float):
        try:
            import flashinfer
        except ImportError as err:
            raise RuntimeError("ssdk: attention_backend='flashinfer' needs the flashinfer package") from err
        self.workspace = torch.empty(128 << 20, dtype=torch.uint8, device=device)
        self.wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(self.workspace, "NHD")
        self.device, self.page_size, self.dtype, self.sm_scale = device, page_size, dtype, sm_scale
        self.heads = (num_qo_heads, num_kv_heads, head_dim)

    def plan(self, spec: BatchSpec) -> FlashInferAttention:
        if spec.tree_mask is not None:
            raise NotImplementedError("ssdk: the flashinfer backend serves causal batches only (no tree_mask)")
        page = self.page_size
        kv_indptr, indices, last = [0], [], []
        for b, prefix in enumerate(spec.prefix_lens):
            kv_len = prefix + spec.qo_indptr[b + 1] - spec.qo_indptr[b]
            pages = -(-kv_len // page)
            indices += spec.block_tables[b][:pages]
            kv_indptr.append(kv_indptr[-1] + pages)
            last.append(kv_len - (pages - 1) * page)

        def dev(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int32, device=self.device)

        self.wrapper.plan(dev(spec.qo_indptr), dev(kv_indptr), dev(indices), dev(last), *self.heads, page,
                          causal=True, sm_scale=self.sm_scale, q_data_type=self.dtype, kv_data_type=self.dtype)
        return self

    def run(self, q: torch.Tensor, kv_cache: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.wrapper.run(q.contiguous(), kv_cache)
