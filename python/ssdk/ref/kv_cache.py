"""Reference paged KV-cache store (see ssdk.ops.kv_cache for the layout)."""

from __future__ import annotations

import torch


def store_kv_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor) -> None:
    """k_cache[slot // page_size, slot % page_size] = key[t] (same for v) for every t with slot >= 0.

    Raises IndexError for a slot beyond the cache. Boolean indexing syncs with the host: this is the
    ground truth and the CPU path, not a graph-capturable kernel.
    """
    page_size = k_cache.shape[1]
    slots = slot_mapping.long()
    keep = slots >= 0
    slots = slots[keep]
    capacity = k_cache.shape[0] * page_size
    if slots.numel() and int(slots.max()) >= capacity:
        raise IndexError(f"ssdk: slot_mapping holds slot {int(slots.max())} but the cache has {capacity} slots")
    pages, offsets = slots // page_size, slots % page_size
    k_cache[pages, offsets] = key[keep]
    v_cache[pages, offsets] = value[keep]
