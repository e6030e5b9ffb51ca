"""Triton paged KV-cache store: one program per (token, kv head) copies k and v (see ssdk.ops.kv_cache)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _store_kv_cache_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr, k_tok, k_head, v_tok, v_head, kc_page, kc_slot,
                           kc_head, vc_page, vc_slot, vc_head, page_size, num_slots, head_dim,
                           BLOCK: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if (slot >= 0) & (slot < num_slots):
        page = slot // page_size
        offset = slot - page * page_size
        d = tl.arange(0, BLOCK)
        mask = d < head_dim
        k = tl.load(k_ptr + token * k_tok + head * k_head + d, mask=mask)
        v = tl.load(v_ptr + token * v_tok + head * v_head + d, mask=mask)
        tl.store(kc_ptr + page * kc_page + offset * kc_slot + head * kc_head + d, k, mask=mask)
        tl.store(vc_ptr + page * vc_page + offset * vc_slot + head * vc_head + d, v, mask=mask)


def store_kv_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor) -> None:
    num_tokens, num_heads, head_dim = key.shape
    if num_tokens == 0 or num_heads == 0:
        return
    _store_kv_cache_kernel[(num_tokens, num_heads)](
        key, value, k_cache, v_cache, slot_mapping, key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0), v_cache.stride(1),
        v_cache.stride(2), k_cache.shape[1], k_cache.shape[0] * k_cache.shape[1], head_dim,
        BLOCK=triton.next_power_of_2(head_dim), num_warps=1 if head_dim <= 128 else 2)
