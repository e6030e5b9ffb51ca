"""Triton sampling and speculative verification (semantics: ssdk.ops.verify; reference: ssdk.ref.verify).

Simple and portable rather than fast: one program per row computes the row's distribution (max,
argmax, top-k / top-p / Saguaro thresholds by binary search over order keys, normalizer), then one
program per request decides acceptance and runs the final sampling pass. Philox streams and the
sampling rules are bit-identical to the reference and the CUDA kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssdk.ops._checks import row_stride

LOG2E = 1.4426950408889634
BLOCK_V = 1024
NO_KEY = 2**32  # a key threshold nothing reaches


@triton.jit
def _philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint32 tensors/scalars; returns the four output words."""
    m0 = tl.full(c0.shape, 0xD2511F53, tl.uint32)
    m1 = tl.full(c0.shape, 0xCD9E8D57, tl.uint32)
    w0 = tl.full(c0.shape, 0x9E3779B9, tl.uint32)
    w1 = tl.full(c0.shape, 0xBB67AE85, tl.uint32)
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(m0, c0)
        lo0 = m0 * c0
        hi1 = tl.umulhi(m1, c2)
        lo1 = m1 * c2
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + w0
        k1 = k1 + w1
    return c0, c1, c2, c3


@triton.jit
def _uniform(seed_lo, seed_hi, off_lo, off_hi, row, tag, idx):
    """fp32 uniforms in (0, 1) of draw indices ``idx`` (int tensor) of (row, tag)."""
    i = idx.to(tl.uint32)
    c0 = i >> 2
    c1 = tl.zeros_like(c0) + (row + (tag << 28)).to(tl.uint32)
    c2 = tl.zeros_like(c0) + off_lo.to(tl.uint32)
    c3 = tl.zeros_like(c0) + off_hi.to(tl.uint32)
    k0 = tl.zeros_like(c0) + seed_lo.to(tl.uint32)
    k1 = tl.zeros_like(c0) + seed_hi.to(tl.uint32)
    w0, w1, w2, w3 = _philox(c0, c1, c2, c3, k0, k1)
    lane = i & 3
    w = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))
    return ((w >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07


@triton.jit
def _key(x):
    """Order-preserving uint32 key of fp32 values, as int64."""
    bits = (x + 0.0).to(tl.int32, bitcast=True).to(tl.int64)  # sign-extended
    return tl.where(bits < 0, -1 - bits, bits + 2147483648)


@triton.jit
def _weight(x, m, scale, keep_key, sag_key, sag_x):
    key = _key(x)
    e = tl.exp2((x - m) * scale)
    e = tl.where(key >= sag_key, e * sag_x, e)
    return tl.where(key >= keep_key, e, 0.0)


@triton.jit
def _select(row_ptr, V, target, m, scale, keep_key, MASS: tl.constexpr, BLOCK: tl.constexpr):
    """Largest key kappa with W(key >= kappa) >= target; W counts tokens (MASS false) or sums their
    weights exp2((x - m) * scale) over keys >= keep_key (MASS true). 32 bisection passes."""
    lo = tl.zeros([], dtype=tl.int64)
    hi = tl.zeros([], dtype=tl.int64) + 4294967296
    for _ in range(32):
        mid = lo + (hi - lo) // 2
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for v0 in range(0, V, BLOCK):
            v = v0 + tl.arange(0, BLOCK)
            x = tl.load(row_ptr + v, mask=v < V, other=0.0).to(tl.float32)
            key = _key(x)
            hit = (v < V) & (key >= mid)
            if MASS:
                w = tl.where(hit & (key >= keep_key), tl.exp2((x - m) * scale), 0.0)
            else:
                w = hit.to(tl.float32)
            acc += w
        if tl.sum(acc, axis=0) >= target:
            lo = mid
        else:
            hi = mid
    return lo


@triton.jit(do_not_specialize=[
    "target_stride", "draft_stride", "rows_per_req", "K", "sag_f", "sag_target", "V"])
def _dist_kernel(target_ptr, target_stride, draft_ptr, draft_stride, rows_per_req, K, node_req_ptr, temp_ptr,
                 top_k_ptr, top_p_ptr, sag_x_ptr, sag_f, sag_target, distf_ptr, disti_ptr, V,
                 HAS_TEMP: tl.constexpr, HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, HAS_SAG: tl.constexpr,
                 HAS_NODE_REQ: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0)
    if rows_per_req > 0:
        req = r // rows_per_req
        j = r % rows_per_req
        is_draft = j > K
        if is_draft:
            row_ptr = draft_ptr + (req * K + (j - K - 1)).to(tl.int64) * draft_stride
        else:
            row_ptr = target_ptr + (req * (K + 1) + j).to(tl.int64) * target_stride
    else:
        if HAS_NODE_REQ:
            req = tl.load(node_req_ptr + r)
        else:
            req = r
        is_draft = r < 0
        row_ptr = target_ptr + r.to(tl.int64) * target_stride
    t = 0.0
    if HAS_TEMP:
        t = tl.load(temp_ptr + req)
    scale = tl.where(t > 0, 1.4426950408889634 / tl.where(t > 0, t, 1.0), 0.0)
    inv_t = tl.where(t > 0, 1.0 / tl.where(t > 0, t, 1.0), 0.0)
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.full([BLOCK], 2147483647, tl.int32)
    for v0 in range(0, V, BLOCK):
        v = v0 + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + v, mask=v < V, other=float("-inf")).to(tl.float32)
        better = x > best
        best_idx = tl.where(better, v, best_idx)
        best = tl.where(better, x, best)
    m = tl.max(best, axis=0)
    argmax = tl.min(tl.where(best == m, best_idx, 2147483647), axis=0)
    keep_key = tl.zeros([], dtype=tl.int64)
    sag_key = tl.zeros([], dtype=tl.int64) + 4294967296
    sag_x = tl.full([], 1.0, tl.float32)
    total = tl.full([], 1.0, tl.float32)
    if t > 0:
        if HAS_TOP_K:
            k = tl.load(top_k_ptr + req)
            if (k > 0) & (k < V):
                keep_key = _select(row_ptr, V, k.to(tl.float32) + 0.0, m, scale, keep_key, False, BLOCK)
        if HAS_TOP_P:
            p = tl.load(top_p_ptr + req)
            if p < 1.0:
                acc = tl.zeros([BLOCK], dtype=tl.float32)
                for v0 in range(0, V, BLOCK):
                    v = v0 + tl.arange(0, BLOCK)
                    x = tl.load(row_ptr + v, mask=v < V, other=float("-inf")).to(tl.float32)
                    acc += tl.where(_key(x) >= keep_key, tl.exp2((x - m) * scale), 0.0)
                mass = tl.sum(acc, axis=0) * tl.maximum(p, 0.0)
                mass = tl.maximum(mass, 1e-30)
                keep_key = _select(row_ptr, V, mass, m, scale, keep_key, True, BLOCK)
        if HAS_SAG:
            if is_draft | (sag_target != 0):
                sag_key = _select(row_ptr, V, tl.zeros([], tl.float32) + sag_f + 1, m, scale, keep_key, False, BLOCK)
                sag_x = tl.load(sag_x_ptr + req)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for v0 in range(0, V, BLOCK):
            v = v0 + tl.arange(0, BLOCK)
            x = tl.load(row_ptr + v, mask=v < V, other=float("-inf")).to(tl.float32)
            acc += tl.where(v < V, _weight(x, m, scale, keep_key, sag_key, sag_x), 0.0)
        total = tl.sum(acc, axis=0)
    tl.store(distf_ptr + r * 5 + 0, m)
    tl.store(distf_ptr + r * 5 + 1, total)
    tl.store(distf_ptr + r * 5 + 2, sag_x)
    tl.store(distf_ptr + r * 5 + 3, scale)
    tl.store(distf_ptr + r * 5 + 4, inv_t)
    tl.store(disti_ptr + r * 3 + 0, argmax.to(tl.int64))
    tl.store(disti_ptr + r * 3 + 1, keep_key)
    tl.store(disti_ptr + r * 3 + 2, sag_key)


@triton.jit
def _prob_at(row_ptr, tok, distf_ptr, disti_ptr, r):
    """Probability of token ``tok`` under the distribution of stats row r (0 outside the vocabulary)."""
    x = tl.load(row_ptr + tok).to(tl.float32)
    w = _weight(x, tl.load(distf_ptr + r * 5), tl.load(distf_ptr + r * 5 + 3), tl.load(disti_ptr + r * 3 + 1),
                tl.load(disti_ptr + r * 3 + 2), tl.load(distf_ptr + r * 5 + 2))
    return w / tl.load(distf_ptr + r * 5 + 1)


@triton.jit
def _probs_of(x, distf_ptr, disti_ptr, r, ok):
    """Probabilities of fp32 logits ``x`` under the distribution of stats row r (row loads masked by ``ok``)."""
    w = _weight(x, tl.load(distf_ptr + r * 5, mask=ok, other=0.0), tl.load(distf_ptr + r * 5 + 3, mask=ok, other=0.0),
                tl.load(disti_ptr + r * 3 + 1, mask=ok, other=0), tl.load(disti_ptr + r * 3 + 2, mask=ok, other=0),
                tl.load(distf_ptr + r * 5 + 2, mask=ok, other=1.0))
    return w / tl.load(distf_ptr + r * 5 + 1, mask=ok, other=1.0)


@triton.jit
def _race(p_row, p_is_logits: tl.constexpr, q_row, q_mode: tl.constexpr, has_q, pr, qr, distf_ptr, disti_ptr, V,
          excl_ptr, excl_parent_ptr, excl_node, excl_n, seed_lo, seed_hi, off_lo, off_hi, req,
          BLOCK: tl.constexpr):
    """Exponential race over the final row: argmax max(p - q, 0) / E (fallback p / E). q_mode: 0 none,
    1 draft logits (stats row qr), 2 draft probabilities; has_q: whether this row has a q. Tokens
    excl[c] of nodes c < excl_n whose parent is excl_node are removed from p (excl_n = 0: none)."""
    best = tl.full([], float("-inf"), tl.float32)
    best_idx = tl.full([], 2147483647, tl.int32)
    fb = tl.full([], float("-inf"), tl.float32)
    fb_idx = tl.full([], 2147483647, tl.int32)
    if p_is_logits:
        pm = tl.load(distf_ptr + pr * 5)
        ps = tl.load(distf_ptr + pr * 5 + 1)
        psx = tl.load(distf_ptr + pr * 5 + 2)
        psc = tl.load(distf_ptr + pr * 5 + 3)
        pk = tl.load(disti_ptr + pr * 3 + 1)
        psk = tl.load(disti_ptr + pr * 3 + 2)
    if q_mode == 1:
        qm = tl.load(distf_ptr + qr * 5)
        qs = tl.load(distf_ptr + qr * 5 + 1)
        qsx = tl.load(distf_ptr + qr * 5 + 2)
        qsc = tl.load(distf_ptr + qr * 5 + 3)
        qk = tl.load(disti_ptr + qr * 3 + 1)
        qsk = tl.load(disti_ptr + qr * 3 + 2)
    for v0 in range(0, V, BLOCK):
        v = v0 + tl.arange(0, BLOCK)
        valid = v < V
        x = tl.load(p_row + v, mask=valid, other=0.0).to(tl.float32)
        if p_is_logits:
            p = _weight(x, pm, psc, pk, psk, psx) / ps
        else:
            p = x
        for c in range(0, excl_n):
            if tl.load(excl_parent_ptr + c) == excl_node:
                p = tl.where(v == tl.load(excl_ptr + c), 0.0, p)
        q = tl.zeros([BLOCK], dtype=tl.float32)
        if q_mode == 1:
            y = tl.load(q_row + v, mask=valid & has_q, other=0.0).to(tl.float32)
            q = _weight(y, qm, qsc, qk, qsk, qsx) / qs
        if q_mode == 2:
            q = tl.load(q_row + v, mask=valid & has_q, other=0.0).to(tl.float32)
        q = tl.where(has_q, q, 0.0)
        expo = -tl.log(_uniform(seed_lo, seed_hi, off_lo, off_hi, req, 1, v))
        score = tl.where(valid, tl.maximum(p - q, 0.0) / expo, float("-inf"))
        score_fb = tl.where(valid, p / expo, float("-inf"))
        blk = tl.max(score, axis=0)
        blk_idx = tl.min(tl.where(score == blk, v, 2147483647), axis=0)
        if blk > best:
            best = blk
            best_idx = blk_idx
        blk = tl.max(score_fb, axis=0)
        blk_idx = tl.min(tl.where(score_fb == blk, v, 2147483647), axis=0)
        if blk > fb:
            fb = blk
            fb_idx = blk_idx
    return tl.where(best > 0, best_idx, fb_idx)


@triton.jit(do_not_specialize=[
    "target_stride", "draft_stride", "dprobs_stride", "rows_per_req", "K", "V",
    "seed_lo", "seed_hi", "off_lo", "off_hi"])
def _chain_kernel(target_ptr, target_stride, draft_ptr, draft_stride, dprobs_ptr, dprobs_stride, ids_ptr, temp_ptr,
                  distf_ptr, disti_ptr, out_ptr, len_ptr, fi_acc_ptr, fi_emit_ptr, rows_per_req, K, V,
                  seed_lo, seed_hi, off_lo, off_hi, offset_tensor_ptr,
                  PROBS: tl.constexpr, HAS_TEMP: tl.constexpr, Q_MODE: tl.constexpr, HAS_OFF_T: tl.constexpr,
                  BLOCK_K: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    if HAS_OFF_T:
        extra = tl.load(offset_tensor_ptr)
        off = off_lo.to(tl.int64) + (off_hi.to(tl.int64) << 32) + extra
        off_lo = off & 0xFFFFFFFF
        off_hi = (off >> 32) & 0xFFFFFFFF
    i = tl.arange(0, BLOCK_K)
    pos_ok = i < K
    x = tl.load(ids_ptr + b * K + i, mask=pos_ok, other=0).to(tl.int32)
    in_vocab = pos_ok & (x >= 0) & (x < V)
    xs = tl.where(in_vocab, x, 0)
    t = tl.full([], 0.0, tl.float32)
    if HAS_TEMP:
        t = tl.load(temp_ptr + b)
    stochastic = t > 0
    if PROBS:
        stochastic = t == t
        px = tl.load(target_ptr + (b * (K + 1) + i).to(tl.int64) * target_stride + xs, mask=in_vocab, other=0.0)
        qx = tl.load(dprobs_ptr + (b * K + i).to(tl.int64) * dprobs_stride + xs, mask=in_vocab, other=0.0)
    else:
        r = b * rows_per_req + i
        lx = tl.load(target_ptr + (b * (K + 1) + i).to(tl.int64) * target_stride + xs, mask=in_vocab, other=0.0)
        px = tl.where(in_vocab, _probs_of(lx.to(tl.float32), distf_ptr, disti_ptr, r, pos_ok), 0.0)
        qx = tl.zeros([BLOCK_K], dtype=tl.float32)
        if Q_MODE == 1:
            qr = b * rows_per_req + K + 1 + i
            ly = tl.load(draft_ptr + (b * K + i).to(tl.int64) * draft_stride + xs, mask=in_vocab, other=0.0)
            qx = tl.where(in_vocab, _probs_of(ly.to(tl.float32), distf_ptr, disti_ptr, qr, pos_ok), 0.0)
        if Q_MODE == 2:
            qx = tl.load(dprobs_ptr + (b * K + i).to(tl.int64) * dprobs_stride + xs, mask=in_vocab, other=0.0)
    u = _uniform(seed_lo, seed_hi, off_lo, off_hi, b, 0, i)
    ok = u * qx < px
    if not PROBS:
        argmax = tl.load(disti_ptr + (b * rows_per_req + i) * 3, mask=pos_ok, other=-1)
        ok = tl.where(stochastic, ok, x.to(tl.int64) == argmax)
    ok = ok & pos_ok
    L = tl.min(tl.where(pos_ok & ~ok, i, K), axis=0)
    if stochastic:
        if PROBS:
            q_row = dprobs_ptr + (b * K + L).to(tl.int64) * dprobs_stride
            token = _race(target_ptr + (b * (K + 1) + L).to(tl.int64) * target_stride, False, q_row, 2, L < K,
                          0, 0, distf_ptr, disti_ptr, V, ids_ptr, ids_ptr, -1, 0,
                          seed_lo, seed_hi, off_lo, off_hi, b, BLOCK)
        else:
            pr = b * rows_per_req + L
            if Q_MODE == 1:
                token = _race(target_ptr + (b * (K + 1) + L).to(tl.int64) * target_stride, True,
                              draft_ptr + (b * K + L).to(tl.int64) * draft_stride, 1, L < K, pr,
                              b * rows_per_req + K + 1 + L, distf_ptr, disti_ptr, V, ids_ptr, ids_ptr, -1, 0,
                              seed_lo, seed_hi, off_lo, off_hi, b, BLOCK)
            else:
                token = _race(target_ptr + (b * (K + 1) + L).to(tl.int64) * target_stride, True,
                              dprobs_ptr + (b * K + L).to(tl.int64) * dprobs_stride, Q_MODE, L < K, pr,
                              pr, distf_ptr, disti_ptr, V, ids_ptr, ids_ptr, -1, 0, seed_lo, seed_hi, off_lo, off_hi,
                              b, BLOCK)
    else:
        token = tl.load(disti_ptr + (b * rows_per_req + L) * 3).to(tl.int32)
    w = tl.arange(0, BLOCK_K * 2)
    vals = tl.load(ids_ptr + b * K + w, mask=w < L, other=-1).to(tl.int32)
    vals = tl.where(w == L, token, vals)
    tl.store(out_ptr + b * (K + 1) + w, vals, mask=w < K + 1)
    if PROBS:
        tl.store(fi_acc_ptr + b, tl.load(fi_acc_ptr + b) + tl.sum(ok.to(tl.int32), axis=0))
        tl.store(fi_emit_ptr + b, tl.load(fi_emit_ptr + b) + L)
    else:
        tl.store(len_ptr + b, L)


def _dist(target: torch.Tensor, draft: torch.Tensor | None, rows_per_req: int, k: int, num_rows: int,
          node_req: torch.Tensor | None, temperature, top_k, top_p, sag_x, sag_f: int, sag_target: bool):
    device = target.device
    distf = torch.empty(max(num_rows, 1), 5, dtype=torch.float32, device=device)
    disti = torch.empty(max(num_rows, 1), 3, dtype=torch.int64, device=device)
    if num_rows:
        dummy = distf
        _dist_kernel[(num_rows,)](
            target, row_stride(target), draft if draft is not None else target,
            row_stride(draft) if draft is not None else 0, rows_per_req, k,
            node_req if node_req is not None else disti, temperature if temperature is not None else dummy,
            top_k if top_k is not None else disti, top_p if top_p is not None else dummy,
            sag_x if sag_x is not None else dummy, sag_f, int(sag_target), distf, disti, target.shape[-1],
            HAS_TEMP=temperature is not None, HAS_TOP_K=top_k is not None, HAS_TOP_P=top_p is not None,
            HAS_SAG=sag_x is not None, HAS_NODE_REQ=node_req is not None, BLOCK=BLOCK_V)
    return distf, disti


def _seed_args(seed: int, offset: int) -> tuple[int, int, int, int]:
    seed &= 2**64 - 1
    return seed & 0xFFFFFFFF, seed >> 32, offset & 0xFFFFFFFF, (offset >> 32) & 0xFFFFFFFF


def verify_chain(out_tokens, accept_len, target_logits, draft_token_ids, draft_logits, draft_probs, temperature, top_k,
                 top_p, saguaro_x, saguaro_f, seed, offset, offset_tensor):
    batch, k1, vocab = target_logits.shape
    k = k1 - 1
    if batch == 0:
        return
    with_draft = draft_logits is not None and k > 0 and temperature is not None
    rpr = k1 + (k if with_draft else 0)
    distf, disti = _dist(target_logits, draft_logits if with_draft else None, rpr, k, batch * rpr, None, temperature,
                         top_k, top_p, saguaro_x if with_draft else None, saguaro_f, False)
    q_mode = 1 if with_draft else (2 if draft_probs is not None else 0)
    dprobs = draft_probs if draft_probs is not None else distf
    _chain_kernel[(batch,)](
        target_logits, row_stride(target_logits), draft_logits if with_draft else target_logits,
        row_stride(draft_logits) if with_draft else 0, dprobs, row_stride(dprobs) if draft_probs is not None else 0,
        draft_token_ids, temperature if temperature is not None else distf, distf, disti, out_tokens, accept_len,
        accept_len, accept_len, rpr, k, vocab, *_seed_args(seed, offset),
        offset_tensor if offset_tensor is not None else disti, PROBS=False, HAS_TEMP=temperature is not None,
        Q_MODE=q_mode, HAS_OFF_T=offset_tensor is not None, BLOCK_K=triton.next_power_of_2(max(k, 1)),
        BLOCK=BLOCK_V)


def chain_speculative_sampling(tokens, accepted, emitted, draft_probs, draft_token_ids, target_probs, seed, offset,
                               offset_tensor):
    batch, k1, vocab = target_probs.shape
    k = k1 - 1
    if batch == 0:
        return
    _chain_kernel[(batch,)](
        target_probs, row_stride(target_probs), target_probs, 0, draft_probs, row_stride(draft_probs),
        draft_token_ids, target_probs, target_probs, accepted, tokens, accepted, accepted, emitted, k1, k, vocab,
        *_seed_args(seed, offset), offset_tensor if offset_tensor is not None else accepted, PROBS=True,
        HAS_TEMP=False, Q_MODE=2, HAS_OFF_T=offset_tensor is not None, BLOCK_K=triton.next_power_of_2(max(k, 1)),
        BLOCK=BLOCK_V)


@triton.jit(do_not_specialize=["target_stride", "width", "V", "seed_lo", "seed_hi", "off_lo", "off_hi"])
def _tree_kernel(target_ptr, target_stride, tokens_ptr, parents_ptr, qo_indptr_ptr, temp_ptr, distf_ptr, disti_ptr,
                 len_ptr, nodes_ptr, out_ptr, width, V, seed_lo, seed_hi, off_lo, off_hi, offset_tensor_ptr,
                 HAS_TEMP: tl.constexpr, HAS_OFF_T: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    if HAS_OFF_T:
        off = off_lo.to(tl.int64) + (off_hi.to(tl.int64) << 32) + tl.load(offset_tensor_ptr)
        off_lo = off & 0xFFFFFFFF
        off_hi = (off >> 32) & 0xFFFFFFFF
    start = tl.load(qo_indptr_ptr + b)
    n = tl.minimum(tl.load(qo_indptr_ptr + b + 1) - start, 1024)
    t = 0.0
    if HAS_TEMP:
        t = tl.load(temp_ptr + b)
    slots = tl.arange(0, BLOCK_W)
    path = tl.where(slots == 0, 0, -1)
    toks = tl.full([BLOCK_W], -1, tl.int32)
    node = tl.zeros([], tl.int32)
    depth = tl.zeros([], tl.int32)
    draw = tl.zeros([], tl.int32)
    excl_node = tl.full([], -1, tl.int32)
    searching = (n > 0).to(tl.int32)
    while (searching != 0) & (depth < width - 1):
        row = start + node
        mass = tl.zeros([], tl.float32)
        found = tl.full([], -1, tl.int32)
        has_child = tl.zeros([], tl.int32)
        c = node + 1
        while (c < n) & (found < 0):
            p = tl.load(parents_ptr + start + c)
            if p == node:
                has_child = 1
                tok = tl.load(tokens_ptr + start + c).to(tl.int32)
                ok_tok = (tok >= 0) & (tok < V)
                if t > 0:
                    val = tl.where(ok_tok, _prob_at(target_ptr + row.to(tl.int64) * target_stride,
                                                    tl.where(ok_tok, tok, 0), distf_ptr, disti_ptr, row), 0.0)
                    u = tl.sum(_uniform(seed_lo, seed_hi, off_lo, off_hi, b, 0, draw + tl.arange(0, 1)), axis=0)
                    draw += 1
                    if u * (1.0 - mass) < val:
                        found = c
                    mass += val
                else:
                    if ok_tok & (tok.to(tl.int64) == tl.load(disti_ptr + row * 3)):
                        found = c
            c += 1
        if found >= 0:
            depth += 1
            path = tl.where(slots == depth, found, path)
            toks = tl.where(slots == depth - 1, tl.load(tokens_ptr + start + found).to(tl.int32), toks)
            node = found
        else:
            searching = 0
            if has_child != 0:
                excl_node = node
    if n > 0:
        row = start + node
        if t > 0:
            token = _race(target_ptr + row.to(tl.int64) * target_stride, True, target_ptr, 0, False, row, row,
                          distf_ptr,
                          disti_ptr, V, tokens_ptr + start, parents_ptr + start, excl_node, n, seed_lo, seed_hi,
                          off_lo, off_hi, b, BLOCK)
        else:
            token = tl.load(disti_ptr + row * 3).to(tl.int32)
        toks = tl.where(slots == depth, token, toks)
    else:
        path = tl.full([BLOCK_W], -1, tl.int32)
    tl.store(len_ptr + b, depth)
    tl.store(nodes_ptr + b * width + slots, path, mask=slots < width)
    tl.store(out_ptr + b * width + slots, toks, mask=slots < width)


def verify_tree(accept_len, accept_nodes, out_tokens, target_logits, tokens, parents, qo_indptr, temperature, top_k,
                top_p, seed, offset, offset_tensor):
    batch = qo_indptr.numel() - 1
    n_total, vocab = target_logits.shape
    if batch == 0:
        return
    counts = qo_indptr[1:] - qo_indptr[:-1]
    node_req = torch.repeat_interleave(torch.arange(batch, device=qo_indptr.device, dtype=torch.int32), counts,
                                       output_size=n_total)
    distf, disti = _dist(target_logits, None, 0, 0, n_total, node_req, temperature, top_k, top_p, None, 0, False)
    width = accept_nodes.shape[1]
    _tree_kernel[(batch,)](
        target_logits, row_stride(target_logits), tokens, parents, qo_indptr,
        temperature if temperature is not None else distf, distf, disti, accept_len, accept_nodes, out_tokens, width,
        vocab, *_seed_args(seed, offset), offset_tensor if offset_tensor is not None else disti,
        HAS_TEMP=temperature is not None, HAS_OFF_T=offset_tensor is not None,
        BLOCK_W=triton.next_power_of_2(width), BLOCK=BLOCK_V)


@triton.jit(do_not_specialize=["stride", "V", "seed_lo", "seed_hi", "off_lo", "off_hi"])
def _sample_kernel(logits_ptr, stride, distf_ptr, disti_ptr, out_ptr, V, seed_lo, seed_hi, off_lo, off_hi,
                   offset_tensor_ptr, HAS_OFF_T: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    if HAS_OFF_T:
        off = off_lo.to(tl.int64) + (off_hi.to(tl.int64) << 32) + tl.load(offset_tensor_ptr)
        off_lo = off & 0xFFFFFFFF
        off_hi = (off >> 32) & 0xFFFFFFFF
    inv_t = tl.load(distf_ptr + b * 5 + 4)
    keep_key = tl.load(disti_ptr + b * 3 + 1)
    sag_key = tl.load(disti_ptr + b * 3 + 2)
    log_x = tl.log(tl.load(distf_ptr + b * 5 + 2))
    row = logits_ptr + b.to(tl.int64) * stride
    best = tl.full([], float("-inf"), tl.float32)
    best_idx = tl.full([], 2147483647, tl.int32)
    for v0 in range(0, V, BLOCK):
        v = v0 + tl.arange(0, BLOCK)
        valid = v < V
        x = tl.load(row + v, mask=valid, other=float("-inf")).to(tl.float32)
        key = _key(x)
        g = -tl.log(-tl.log(_uniform(seed_lo, seed_hi, off_lo, off_hi, b, 1, v)))
        score = x * inv_t + tl.where(key >= sag_key, log_x, 0.0) + g
        score = tl.where(valid & (key >= keep_key), score, float("-inf"))
        blk = tl.max(score, axis=0)
        blk_idx = tl.min(tl.where(score == blk, v, 2147483647), axis=0)
        if blk > best:
            best = blk
            best_idx = blk_idx
    token = tl.where(inv_t > 0, best_idx, tl.load(disti_ptr + b * 3).to(tl.int32))
    tl.store(out_ptr + b, token.to(tl.int64))


def sample_tokens(out, logits, temperature, top_k, top_p, saguaro_x, saguaro_f, seed, offset, offset_tensor):
    batch, vocab = logits.shape
    if batch == 0:
        return
    distf, disti = _dist(logits, None, 0, 0, batch, None, temperature, top_k, top_p, saguaro_x, saguaro_f, True)
    _sample_kernel[(batch,)](logits, row_stride(logits), distf, disti, out, vocab, *_seed_args(seed, offset),
                             offset_tensor if offset_tensor is not None else disti,
                             HAS_OFF_T=offset_tensor is not None, BLOCK=BLOCK_V)


@triton.jit
def _write_probs_kernel(logits_ptr, stride, distf_ptr, disti_ptr, out_ptr, V, BLOCK: tl.constexpr):
    r = tl.program_id(0)
    m = tl.load(distf_ptr + r * 5)
    total = tl.load(distf_ptr + r * 5 + 1)
    sag_x = tl.load(distf_ptr + r * 5 + 2)
    scale = tl.load(distf_ptr + r * 5 + 3)
    argmax = tl.load(disti_ptr + r * 3)
    keep_key = tl.load(disti_ptr + r * 3 + 1)
    sag_key = tl.load(disti_ptr + r * 3 + 2)
    for v0 in range(0, V, BLOCK):
        v = v0 + tl.arange(0, BLOCK)
        x = tl.load(logits_ptr + r.to(tl.int64) * stride + v, mask=v < V, other=0.0).to(tl.float32)
        p = _weight(x, m, scale, keep_key, sag_key, sag_x) / total
        p = tl.where(scale > 0, p, tl.where(v == argmax, 1.0, 0.0))
        tl.store(out_ptr + r.to(tl.int64) * V + v, p, mask=v < V)


def probs_from_logits(out, logits, temperature, top_k, top_p, saguaro_x, saguaro_f):
    batch, vocab = logits.shape
    if batch == 0:
        return
    distf, disti = _dist(logits, None, 0, 0, batch, None, temperature, top_k, top_p, saguaro_x, saguaro_f, True)
    _write_probs_kernel[(batch,)](logits, row_stride(logits), distf, disti, out, vocab, BLOCK=BLOCK_V)


@triton.jit(do_not_specialize=["V", "F"])
def _saguaro_kernel(probs_ptr, x_ptr, out_ptr, V, F, BLOCK: tl.constexpr):
    r = tl.program_id(0)
    row = probs_ptr + r.to(tl.int64) * V
    top = _select(row, V, tl.zeros([], tl.float32) + F + 1, 0.0, 0.0, 0, False, BLOCK)
    x = tl.load(x_ptr + r)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for v0 in range(0, V, BLOCK):
        v = v0 + tl.arange(0, BLOCK)
        p = tl.load(row + v, mask=v < V, other=0.0)
        acc += tl.where(_key(p) >= top, p * x, p)
    total = tl.sum(acc, axis=0)
    for v0 in range(0, V, BLOCK):
        v = v0 + tl.arange(0, BLOCK)
        p = tl.load(row + v, mask=v < V, other=0.0)
        tl.store(out_ptr + r.to(tl.int64) * V + v, tl.where(_key(p) >= top, p * x, p) / total, mask=v < V)


def saguaro_rescale(out, probs, x, F):
    if probs.shape[0]:
        _saguaro_kernel[(probs.shape[0],)](probs, x, out, probs.shape[1], F, BLOCK=BLOCK_V)


@triton.jit(do_not_specialize=["num_spec", "num_draft"])
def _greedy_tree_kernel(predicts_ptr, accept_index_ptr, accept_num_ptr, cand_ptr, ridx_ptr, next_ptr, sib_ptr,
                        target_ptr, num_spec, num_draft):
    b = tl.program_id(0)
    base = b * num_draft
    last = tl.load(ridx_ptr + base)
    tl.store(accept_index_ptr + b * num_spec, last.to(tl.int32))
    num = 0
    cur = tl.zeros([], dtype=tl.int64)
    j = 1
    going = j < num_spec
    while going:
        cur = tl.load(next_ptr + base + cur)
        found = False
        while (cur != -1) & (not found):
            if tl.load(cand_ptr + base + cur) == tl.load(target_ptr + last):
                tl.store(predicts_ptr + last, tl.load(target_ptr + last).to(tl.int32))
                num += 1
                draft_index = tl.load(ridx_ptr + base + cur)
                tl.store(accept_index_ptr + b * num_spec + num, draft_index.to(tl.int32))
                last = draft_index
                found = True
            else:
                cur = tl.load(sib_ptr + base + cur)
        j += 1
        going = (cur != -1) & (j < num_spec)
    tl.store(accept_num_ptr + b, num)
    tl.store(predicts_ptr + last, tl.load(target_ptr + last).to(tl.int32))


def verify_tree_greedy(predicts, accept_index, accept_token_num, candidates, retrive_index, retrive_next_token,
                       retrive_next_sibling, target_predict):
    batch, num_draft = candidates.shape
    if batch:
        _greedy_tree_kernel[(batch,)](predicts, accept_index, accept_token_num, candidates, retrive_index,
                                      retrive_next_token, retrive_next_sibling, target_predict, accept_index.shape[1],
                                      num_draft)
