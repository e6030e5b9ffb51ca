"""Reference sampling and speculative verification (plain PyTorch, fp32; see ssdk.ops.verify).

Randomness is Philox4x32-10, bit-identical to the CUDA and Triton kernels:
``uniform(seed, offset, row, tag, i)`` is word ``i & 3`` of philox(key=(seed_lo, seed_hi),
counter=(i >> 2, row + (tag << 28), offset_lo, offset_hi)), mapped to ((w >> 9) + 0.5) * 2**-23 in (0, 1).
tag 0 draws the acceptance tests (draw i = the i-th test of a request), tag 1 the final sample
(draw i = vocabulary index i): Gumbel-max on logits for sample_tokens, the exponential race
argmax r_v / -log(u_v) on probabilities r for the recovery / bonus token of verification.
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
TAG_ACCEPT, TAG_SAMPLE = 0, 1


def _mulhilo(a: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of a * b for uint32 values held in int64 (no int64 overflow)."""
    t_lo = (a & 0xFFFF) * b
    t_hi = (a >> 16) * b
    return (t_hi + (t_lo >> 16)) >> 16, (((t_hi & 0xFFFF) << 16) + t_lo) & MASK32


def philox4x32(c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
               seed: int) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of counters (uint32 values in int64 tensors) under the 64-bit key ``seed``."""
    k0, k1 = seed & MASK32, (seed >> 32) & MASK32
    for _ in range(10):
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


def uniforms(seed: int, offset: int, rows: torch.Tensor, tag: int, idx: torch.Tensor) -> torch.Tensor:
    """fp32 uniforms in (0, 1) for broadcastable int64 ``rows`` and draw indices ``idx``."""
    rows, idx = torch.broadcast_tensors(rows.long(), idx.long())
    words = philox4x32(idx >> 2, rows + (tag << 28), torch.full_like(idx, offset & MASK32),
                       torch.full_like(idx, (offset >> 32) & MASK32), seed)
    lane = idx & 3
    w = torch.where(lane == 0, words[0], torch.where(lane == 1, words[1], torch.where(lane == 2, words[2], words[3])))
    return ((w >> 9).float() + 0.5) * 2.0**-23


def gumbel(seed: int, offset: int, rows: torch.Tensor, vocab: int) -> torch.Tensor:
    """[len(rows), vocab] Gumbel noise -log(-log(u)) of the final-sample stream."""
    u = uniforms(seed, offset, rows.long()[:, None], TAG_SAMPLE, torch.arange(vocab, device=rows.device)[None, :])
    return -torch.log(-torch.log(u))


def _inv_temperature(temperature: torch.Tensor) -> torch.Tensor:
    t = temperature.float()
    return torch.where(t > 0, 1.0 / torch.where(t > 0, t, torch.ones_like(t)), torch.ones_like(t))


def kth_largest(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[R, 1] k-th largest value per row (k clamped to [1, V])."""
    ordered = values.sort(dim=-1, descending=True).values
    return ordered.gather(-1, (k.long().clamp(1, values.shape[-1]) - 1)[:, None])


def keep_mask(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None,
              top_p: torch.Tensor | None) -> torch.Tensor:
    """[R, V] bool: tokens that survive top-k (logit >= k-th largest logit, ties kept; k <= 0 or k >= V
    disables) and then top-p on the renormalized survivors (keep v iff the mass of strictly more likely
    tokens is < top_p; top_p >= 1 disables; the most likely tokens are always kept)."""
    lf = logits.float()
    vocab = lf.shape[-1]
    keep = torch.ones_like(lf, dtype=torch.bool)
    if top_k is not None:
        k = top_k.long()
        enabled = (k > 0) & (k < vocab)
        keep &= ~enabled[:, None] | (lf >= kth_largest(lf, k))
    if top_p is not None:
        inv_t = _inv_temperature(temperature)[:, None]
        e = torch.exp((lf - lf.max(-1, keepdim=True).values) * inv_t) * keep
        order = lf.masked_fill(~keep, float("-inf")).argsort(dim=-1, descending=True, stable=True)
        e_sorted = e.gather(-1, order)
        above = e_sorted.cumsum(-1) - e_sorted  # mass of tokens before this one in the order
        target = top_p.float()[:, None] * e.sum(-1, keepdim=True)
        last = ((above < target) & (e_sorted > 0)).long().cumsum(-1).argmax(-1, keepdim=True)  # last True
        tau = lf.gather(-1, order.gather(-1, last))
        enabled = top_p.float() < 1
        keep &= ~enabled[:, None] | (lf >= tau)
    return keep


def saguaro_weights(logits: torch.Tensor, x: torch.Tensor | None, F: int) -> torch.Tensor:
    """[R, V] weights: x on the top-(F+1) logits of each row (ties at the boundary included), else 1."""
    lf = logits.float()
    if x is None:
        return torch.ones_like(lf)
    top = lf >= kth_largest(lf, torch.full((lf.shape[0],), F + 1, device=lf.device))
    return torch.where(top, x.float()[:, None].expand_as(lf), torch.ones_like(lf))


def probs_from_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None = None,
                      top_p: torch.Tensor | None = None, saguaro_x: torch.Tensor | None = None,
                      saguaro_f: int = 0) -> torch.Tensor:
    """[R, V] fp32 sampling distribution: softmax((l - max) / T) over the kept tokens, times the Saguaro
    weights, renormalized. Rows with T == 0 are one-hot at the argmax (lowest index on ties)."""
    lf = logits.float()
    inv_t = _inv_temperature(temperature)[:, None]
    keep = keep_mask(lf, temperature, top_k, top_p)
    e = torch.exp((lf - lf.max(-1, keepdim=True).values) * inv_t) * keep * saguaro_weights(lf, saguaro_x, saguaro_f)
    probs = e / e.sum(-1, keepdim=True)
    greedy = torch.zeros_like(probs).scatter_(-1, lf.argmax(-1, keepdim=True), 1.0)
    return torch.where((temperature.float() > 0)[:, None], probs, greedy)


def saguaro_rescale(probs: torch.Tensor, x: torch.Tensor, F: int) -> torch.Tensor:
    """Multiply the top-(F+1) probabilities of each row (ties included) by x and renormalize."""
    pf = probs.float()
    w = pf * saguaro_weights(pf, x, F)
    return w / w.sum(-1, keepdim=True)


def _gumbel_argmax(log_weights: torch.Tensor, rows: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
    """Index of max(log_weights + Gumbel) per row (lowest index on ties); -inf entries never win."""
    score = log_weights + gumbel(seed, offset, rows, log_weights.shape[-1])
    return score.argmax(-1)


def sample_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None,
                  seed: int, offset: int, saguaro_x: torch.Tensor | None = None, saguaro_f: int = 0) -> torch.Tensor:
    """[B] int64: argmax for T == 0, else a sample of probs_from_logits by the Gumbel-max trick on
    l / T + log(saguaro weight) (request b uses Philox row b)."""
    lf = logits.float()
    if not torch.compiler.is_compiling() and not bool((temperature > 0).any()):
        # all greedy: skip the [B, V] Philox stream (CPU engine tests; same result)
        return lf.argmax(-1)
    inv_t = _inv_temperature(temperature)[:, None]
    keep = keep_mask(lf, temperature, top_k, top_p)
    log_w = lf * inv_t + torch.log(saguaro_weights(lf, saguaro_x, saguaro_f))
    rows = torch.arange(lf.shape[0], device=lf.device)
    sampled = _gumbel_argmax(log_w.masked_fill(~keep, float("-inf")), rows, seed, offset)
    return torch.where(temperature.float() > 0, sampled, lf.argmax(-1))


def race_sample(r: torch.Tensor, p: torch.Tensor, rows: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
    """Sample of norm(r) per row by the exponential race argmax r_v / E_v, E_v = -log(u_v) (tag-1 draws
    of the row; lowest index on ties); rows whose r is all zero sample norm(p) the same way."""
    expo = -torch.log(uniforms(seed, offset, rows.long()[:, None], TAG_SAMPLE,
                               torch.arange(r.shape[-1], device=r.device)[None, :]))
    primary = (r / expo).argmax(-1)
    fallback = (p / expo).argmax(-1)
    return torch.where((r > 0).any(-1), primary, fallback)


def residual_sample(p: torch.Tensor, q: torch.Tensor, rows: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
    """Sample of norm(max(p - q, 0)) per row; rows whose residual is all zero sample p."""
    return race_sample((p - q).clamp(min=0), p, rows, seed, offset)


def _emit(ids: torch.Tensor, accepted: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """[B, K+1] int32: the accepted draft tokens ids[:, :accepted], then final, then -1 (K may be 0)."""
    b, k = ids.shape
    pos = torch.arange(k + 1, device=ids.device)[None, :]
    padded = torch.cat([ids, ids.new_full((b, 1), -1)], 1)
    out = torch.where(pos < accepted[:, None], padded, torch.full_like(padded, -1))
    return torch.where(pos == accepted[:, None], final[:, None].to(padded.dtype), out).int()


def chain_speculative_sampling(draft_probs: torch.Tensor, draft_token_ids: torch.Tensor, target_probs: torch.Tensor,
                               seed: int, offset: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """flashinfer.sampling.chain_speculative_sampling semantics on probabilities.

    Returns (output_token_ids [B, K+1] int32 padded with -1, accepted [B] int32 = tests passed when
    every position is tested independently, emitted [B] int32 = accepted draft tokens)."""
    b, k = draft_token_ids.shape
    ids = draft_token_ids.long()
    p = target_probs.float()
    q = draft_probs.float()
    rows = torch.arange(b, device=p.device)
    u = uniforms(seed, offset, rows[:, None], TAG_ACCEPT, torch.arange(k, device=p.device)[None, :])
    px = p[:, :k].gather(-1, ids[..., None])[..., 0]
    qx = q.gather(-1, ids[..., None])[..., 0]
    accept = u * qx < px
    emitted = accept.long().cumprod(-1).sum(-1)
    q_ext = torch.cat([q, torch.zeros_like(p[:, :1])], dim=1)
    final_p = p[rows, emitted]
    final_q = q_ext[rows, emitted]
    final = residual_sample(final_p, final_q, rows, seed, offset)
    return _emit(ids, emitted, final), accept.sum(-1).int(), emitted.int()


def verify_chain(target_logits: torch.Tensor, draft_token_ids: torch.Tensor, temperature: torch.Tensor | None,
                 draft_logits: torch.Tensor | None = None, draft_probs: torch.Tensor | None = None,
                 top_k: torch.Tensor | None = None, top_p: torch.Tensor | None = None,
                 saguaro_x: torch.Tensor | None = None, saguaro_f: int = 0, seed: int = 0,
                 offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain verification from target logits; see ssdk.ops.verify.verify_chain.

    Returns (out_tokens [B, K+1] int32: accepted draft tokens, then the recovery/bonus token, then -1;
    accept_len [B] int32)."""
    b, k1, vocab = target_logits.shape
    k = k1 - 1
    ids = draft_token_ids.long()
    device = target_logits.device
    if temperature is None:
        temperature = torch.zeros(b, device=device)
    t_rows = temperature.float().repeat_interleave(k1)
    expand = (lambda t: None if t is None else t.repeat_interleave(k1))
    p = probs_from_logits(target_logits.reshape(-1, vocab), t_rows, expand(top_k), expand(top_p)).view(b, k1, vocab)
    if draft_probs is not None:
        q = draft_probs.float()
    elif draft_logits is not None:
        expand_k = (lambda t: None if t is None else t.repeat_interleave(k))
        q = probs_from_logits(draft_logits.reshape(-1, vocab), temperature.float().repeat_interleave(k),
                              expand_k(top_k), expand_k(top_p), expand_k(saguaro_x), saguaro_f).view(b, k, vocab)
    else:
        q = None
    greedy = temperature.float() <= 0
    if q is None:
        if k > 0 and not bool(greedy.all()):
            raise ValueError("ssdk: rows with temperature > 0 need draft_logits or draft_probs")
        q = torch.zeros(b, k, vocab, device=device)
    rows = torch.arange(b, device=device)
    argmax = target_logits.float().argmax(-1)  # [B, K+1]
    u = uniforms(seed, offset, rows[:, None], TAG_ACCEPT, torch.arange(k, device=device)[None, :])
    px = p[:, :k].gather(-1, ids[..., None])[..., 0]
    qx = q.gather(-1, ids[..., None])[..., 0]
    accept = torch.where(greedy[:, None], ids == argmax[:, :k], u * qx < px)
    accept_len = accept.long().cumprod(-1).sum(-1)
    q_ext = torch.cat([q, torch.zeros_like(p[:, :1])], dim=1)
    final = residual_sample(p[rows, accept_len], q_ext[rows, accept_len], rows, seed, offset)
    final = torch.where(greedy, argmax[rows, accept_len], final)
    return _emit(ids, accept_len, final), accept_len.int()


def verify_tree(target_logits: torch.Tensor, tokens: torch.Tensor, parents: torch.Tensor, qo_indptr: torch.Tensor,
                temperature: torch.Tensor | None, max_depth: int, top_k: torch.Tensor | None = None,
                top_p: torch.Tensor | None = None, seed: int = 0,
                offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tree verification with deterministic candidates; see ssdk.ops.verify.verify_tree.

    Returns (accept_len [B] int32, accept_nodes [B, max_depth+1] int32 local node indices of the
    accepted path starting with the root 0, out_tokens [B, max_depth+1] int32 accepted tokens then the
    final token), both padded with -1."""
    device = target_logits.device
    batch = qo_indptr.numel() - 1
    counts = (qo_indptr[1:] - qo_indptr[:-1]).long()
    if temperature is None:
        temperature = torch.zeros(batch, device=device)
    node_req = torch.repeat_interleave(torch.arange(batch, device=device), counts)
    t_rows = temperature.float()[node_req]
    pick = (lambda t: None if t is None else t[node_req])
    p_all = probs_from_logits(target_logits, t_rows, pick(top_k), pick(top_p))
    argmax = target_logits.float().argmax(-1).tolist()
    accept_len = torch.zeros(batch, dtype=torch.int32)
    accept_nodes = torch.full((batch, max_depth + 1), -1, dtype=torch.int32)
    out_tokens = torch.full((batch, max_depth + 1), -1, dtype=torch.int32)
    indptr, par, tok = qo_indptr.tolist(), parents.tolist(), tokens.long().tolist()
    temps = temperature.float().tolist()
    rows = torch.arange(batch, device=device)
    draws = uniforms(seed, offset, rows[:, None], TAG_ACCEPT,
                     torch.arange(max(int(counts.max()) if batch else 0, 1), device=device)[None, :]).tolist()
    final_rows, excluded = [], []
    for b in range(batch):
        start, n = indptr[b], indptr[b + 1] - indptr[b]
        if n == 0:
            final_rows.append(None)
            excluded.append([])
            continue
        children = [[] for _ in range(n)]
        for i in range(1, n):
            if par[start + i] >= 0:
                children[par[start + i]].append(i)
        node, depth, draw, rejected = 0, 0, 0, []
        accept_nodes[b, 0] = 0
        while depth < max_depth:
            row = start + node
            nxt, rejected, mass = None, [], 0.0
            for c in children[node]:
                if temps[b] <= 0:
                    ok = tok[start + c] == argmax[row]
                else:
                    pc = float(p_all[row, tok[start + c]])
                    ok = draws[b][draw] * (1.0 - mass) < pc
                    draw += 1
                    mass += pc
                if ok:
                    nxt = c
                    break
                rejected.append(tok[start + c])
            if nxt is None:
                break
            depth += 1
            node = nxt
            rejected = []
            accept_nodes[b, depth] = node
            out_tokens[b, depth - 1] = tok[start + node]
        accept_len[b] = depth
        final_rows.append(start + node)
        excluded.append(rejected)
    for b in range(batch):
        if final_rows[b] is None:
            continue
        row = final_rows[b]
        if temps[b] <= 0:
            final = argmax[row]
        else:
            p = p_all[row].clone()
            if excluded[b]:
                p[torch.tensor(excluded[b], device=device)] = 0
            final = int(race_sample(p[None], p[None], rows[b:b + 1], seed, offset)[0])
        out_tokens[b, int(accept_len[b])] = final
    return accept_len.to(device), accept_nodes.to(device), out_tokens.to(device)


def verify_tree_greedy_sgl(predicts: torch.Tensor, accept_index: torch.Tensor, accept_token_num: torch.Tensor,
                           candidates: torch.Tensor, retrive_index: torch.Tensor, retrive_next_token: torch.Tensor,
                           retrive_next_sibling: torch.Tensor, target_predict: torch.Tensor) -> None:
    """sgl-kernel verify_tree_greedy, in place (a loop per request, like the kernel's single thread)."""
    batch, num_draft = candidates.shape
    num_spec = accept_index.shape[1]
    cand, ridx = candidates.tolist(), retrive_index.tolist()
    nxt, sib = retrive_next_token.tolist(), retrive_next_sibling.tolist()
    target = target_predict.reshape(-1).tolist()
    pred = predicts.tolist()
    acc_idx = accept_index.tolist()
    acc_num = accept_token_num.tolist()
    for b in range(batch):
        last = ridx[b][0]
        acc_idx[b][0] = last
        num = 0
        cur = 0
        for _ in range(1, num_spec):
            cur = nxt[b][cur]
            while cur != -1:
                if cand[b][cur] == target[last]:
                    pred[last] = target[last]
                    num += 1
                    acc_idx[b][num] = ridx[b][cur]
                    last = ridx[b][cur]
                    break
                cur = sib[b][cur]
            if cur == -1:
                break
        acc_num[b] = num
        pred[last] = target[last]
    predicts.copy_(torch.tensor(pred, dtype=predicts.dtype))
    accept_index.copy_(torch.tensor(acc_idx, dtype=accept_index.dtype))
    accept_token_num.copy_(torch.tensor(acc_num, dtype=accept_token_num.dtype))
