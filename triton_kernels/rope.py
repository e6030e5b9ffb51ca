"""Triton RoPE / fused Qwen-3 q/k-norm + RoPE (+ paged KV write): one program per (token, head).

Heads [0, Hq) are q, [Hq, Hq + Hkv) k, and with a KV write [Hq + Hkv, Hq + 2 Hkv) v (copied into the
cache only). Angles come from the (cos | sin) table row of the token's position, or from
float(pos) * inv_freq. Rounding follows ssdk.ref.rope (hf_exact: transformers' order in the dtype).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssdk.ref.rope import heads_view


@triton.jit
def _rotate(x1, x2, c, s, dtype: tl.constexpr, HF_EXACT: tl.constexpr):
    if HF_EXACT:
        c = c.to(dtype).to(tl.float32)
        s = s.to(dtype).to(tl.float32)
        a = (x1 * c).to(dtype).to(tl.float32)
        b = (x2 * s).to(dtype).to(tl.float32)
        o1 = (a - b).to(dtype).to(tl.float32)
        a = (x2 * c).to(dtype).to(tl.float32)
        b = (x1 * s).to(dtype).to(tl.float32)
        o2 = (a + b).to(dtype).to(tl.float32)
    else:
        o1 = x1 * c - x2 * s
        o2 = x2 * c + x1 * s
    return o1, o2


@triton.jit
def _rope_kernel(pos_ptr, q_ptr, k_ptr, v_ptr, table_ptr, qw_ptr, kw_ptr, kc_ptr, vc_ptr, slot_ptr,
                 q_tok, q_head, k_tok, k_head, v_tok, v_head, kc_page, kc_slot, kc_head, vc_page, vc_slot, vc_head,
                 num_q_heads, num_kv_heads, max_position, page_size, num_slots, eps,
                 HALF: tl.constexpr, BLOCK: tl.constexpr, NEOX: tl.constexpr, FROM_INV_FREQ: tl.constexpr,
                 NORM: tl.constexpr, KV_WRITE: tl.constexpr, HF_EXACT: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    dtype = q_ptr.dtype.element_ty
    i = tl.arange(0, BLOCK)
    mask = i < HALF
    # Element offsets of the pair (x1, x2) for pair index i.
    if NEOX:
        off1 = i
        off2 = i + HALF
    else:
        off1 = 2 * i
        off2 = 2 * i + 1
    is_q = head < num_q_heads
    is_v = head >= num_q_heads + num_kv_heads
    kv_head = tl.where(is_q, 0, tl.where(is_v, head - num_q_heads - num_kv_heads, head - num_q_heads)).to(tl.int64)
    slot = -1
    if KV_WRITE:
        slot = tl.load(slot_ptr + token).to(tl.int64)
        slot = tl.where(slot < num_slots, slot, -1)
    page = slot // page_size
    offset = slot - page * page_size
    if is_v:
        if KV_WRITE:
            src = v_ptr + token * v_tok + kv_head * v_head
            dst = vc_ptr + page * vc_page + offset * vc_slot + kv_head * vc_head
            write = mask & (slot >= 0)
            tl.store(dst + off1, tl.load(src + off1, mask=mask), mask=write)
            tl.store(dst + off2, tl.load(src + off2, mask=mask), mask=write)
    else:
        if is_q:
            base = q_ptr + token * q_tok + head * q_head
        else:
            base = k_ptr + token * k_tok + kv_head * k_head
        x1 = tl.load(base + off1, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(base + off2, mask=mask, other=0.0).to(tl.float32)
        if NORM:
            rstd = tl.rsqrt((tl.sum(x1 * x1, axis=0) + tl.sum(x2 * x2, axis=0)) / (2 * HALF) + eps)
            if is_q:
                w_ptr = qw_ptr
            else:
                w_ptr = kw_ptr
            w1 = tl.load(w_ptr + off1, mask=mask, other=0.0).to(tl.float32)
            w2 = tl.load(w_ptr + off2, mask=mask, other=0.0).to(tl.float32)
            n1 = x1 * rstd
            n2 = x2 * rstd
            if HF_EXACT:
                n1 = n1.to(dtype).to(tl.float32)
                n2 = n2.to(dtype).to(tl.float32)
            x1 = (n1 * w1).to(dtype).to(tl.float32)
            x2 = (n2 * w2).to(dtype).to(tl.float32)
        pos = tl.load(pos_ptr + token).to(tl.int64)
        if FROM_INV_FREQ:
            angle = pos.to(tl.float32) * tl.load(table_ptr + i, mask=mask, other=0.0)
            c = tl.cos(angle)
            s = tl.sin(angle)
        else:
            valid = (pos >= 0) & (pos < max_position)
            row = table_ptr + tl.where(valid, pos, 0) * (2 * HALF)
            c = tl.load(row + i, mask=mask, other=0.0).to(tl.float32)
            s = tl.load(row + HALF + i, mask=mask, other=0.0).to(tl.float32)
            c = tl.where(valid, c, float("nan"))  # out of the table: poison (no host sync to raise)
            s = tl.where(valid, s, float("nan"))
        o1, o2 = _rotate(x1, x2, c, s, dtype, HF_EXACT)
        tl.store(base + off1, o1.to(dtype), mask=mask)
        tl.store(base + off2, o2.to(dtype), mask=mask)
        if KV_WRITE:
            if head >= num_q_heads:
                dst = kc_ptr + page * kc_page + offset * kc_slot + kv_head * kc_head
                write = mask & (slot >= 0)
                tl.store(dst + off1, o1.to(dtype), mask=write)
                tl.store(dst + off2, o2.to(dtype), mask=write)


def _launch(positions, query, key, head_size, table, is_neox, hf_exact, from_inv_freq, q_weight=None, k_weight=None,
            eps=0.0, value=None, k_cache=None, v_cache=None, slot_mapping=None):
    num_tokens = positions.shape[0]
    if num_tokens == 0:
        return
    half = table.shape[0] if from_inv_freq else table.shape[1] // 2
    q = heads_view(query, head_size)
    k = heads_view(key, head_size) if key is not None else q
    kv_write = k_cache is not None
    v = heads_view(value, head_size) if kv_write else k
    kc = k_cache if kv_write else q.unsqueeze(0)
    vc = v_cache if kv_write else kc
    num_kv = k.shape[1] if key is not None else 0
    grid = (num_tokens, q.shape[1] + num_kv + (num_kv if kv_write else 0))
    _rope_kernel[grid](
        positions, q, k, v, table, q_weight if q_weight is not None else q, k_weight if k_weight is not None else q,
        kc, vc, slot_mapping if kv_write else positions,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        kc.stride(0), kc.stride(1), kc.stride(2), vc.stride(0), vc.stride(1), vc.stride(2),
        q.shape[1], num_kv, 0 if from_inv_freq else table.shape[0], kc.shape[1], kc.shape[0] * kc.shape[1], eps,
        HALF=half, BLOCK=triton.next_power_of_2(half), NEOX=is_neox, FROM_INV_FREQ=from_inv_freq,
        NORM=q_weight is not None, KV_WRITE=kv_write, HF_EXACT=hf_exact, num_warps=1 if half <= 64 else 2)


def rope(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None, head_size: int,
         cos_sin_cache: torch.Tensor, is_neox: bool, hf_exact: bool, value: torch.Tensor | None = None,
         k_cache: torch.Tensor | None = None, v_cache: torch.Tensor | None = None,
         slot_mapping: torch.Tensor | None = None) -> None:
    _launch(positions, query, key, head_size, cos_sin_cache, is_neox, hf_exact, False, value=value, k_cache=k_cache,
            v_cache=v_cache, slot_mapping=slot_mapping)


def rope_pos_ids(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None, head_size: int,
                 inv_freq: torch.Tensor, is_neox: bool, hf_exact: bool) -> None:
    _launch(positions, query, key, head_size, inv_freq, is_neox, hf_exact, True)


def qk_norm_rope(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor, q_weight: torch.Tensor,
                 k_weight: torch.Tensor, eps: float, cos_sin_cache: torch.Tensor, is_neox: bool, hf_exact: bool,
                 value: torch.Tensor | None, k_cache: torch.Tensor | None, v_cache: torch.Tensor | None,
                 slot_mapping: torch.Tensor | None) -> None:
    _launch(positions, query, key, q_weight.shape[0], cos_sin_cache, is_neox, hf_exact, False, q_weight, k_weight,
            eps, value, k_cache, v_cache, slot_mapping)
