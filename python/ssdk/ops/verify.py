"""Sampling and speculative verification from logits: greedy and stochastic, chain and tree.

Sampling distribution of a row of logits l under (T, top_k, top_p, Saguaro x, F):
  T == 0          greedy: the argmax (lowest index on ties, like torch.argmax); filters are ignored;
  top-k           keep l_v >= the k-th largest logit (ties kept); k <= 0 or k >= V disables;
  top-p           then keep v iff the renormalized mass of strictly more likely kept tokens is < top_p
                  (top_p >= 1 disables; the most likely tokens are always kept);
  Saguaro         weight x on the top-(F+1) logits (ties at the boundary included), 1 elsewhere;
  p_v            = keep_v * w_v * exp((l_v - max l) / T), normalized.
The same function (ssdk.ref.verify.probs_from_logits, the shared device code in the kernels) is used
to draft and to verify, so acceptance stays exact with Saguaro rescaling.

Randomness: Philox4x32-10 keyed by ``seed``; counters (draw >> 2, request + (tag << 28), offset).
A call is a pure function of (inputs, seed, offset). ``offset`` is an int, or a device int64 tensor
of shape [1] read when the kernel runs (then the int is added to it): under CUDA-graph replay, capture
``offset_tensor.add_(1)`` after the op (or update it between replays) to draw fresh numbers every step.
"""

from __future__ import annotations

import torch

from .. import _C
from ..ref import verify as ref
from . import _backend
from ._checks import FLOAT_DTYPES, check_dtype, check_rows, check_same_device, check_shape, check_tensor

INDEX_DTYPES = (torch.int32, torch.int64)


def _has_cuda_op(name: str) -> bool:
    return _C is not None and hasattr(torch.ops.ssdk, name)


def _check_logits(t: object, name: str, dims: int) -> torch.Tensor:
    check_tensor(t, name)
    check_dtype(t, name, FLOAT_DTYPES)
    if t.dim() != dims:
        raise ValueError(f"ssdk: {name} must have {dims} dimensions, got shape {tuple(t.shape)}")
    if t.shape[-1] < 1:
        raise ValueError(f"ssdk: {name} must have a non-empty vocabulary dimension, got shape {tuple(t.shape)}")
    check_rows(t, name)
    return t


def _check_vec(t: object, name: str, length: int, dtypes: tuple[torch.dtype, ...], ref_t: torch.Tensor,
               ref_name: str) -> None:
    check_tensor(t, name)
    check_dtype(t, name, dtypes)
    check_same_device(t, name, ref_t, ref_name)
    check_shape(t, name, (length,))
    if not t.is_contiguous():
        raise ValueError(f"ssdk: {name} must be contiguous, got strides {t.stride()}")


def _check_sampling(batch: int, logits: torch.Tensor, temperature, top_k, top_p, saguaro_x, saguaro_f: int,
                    temperature_optional: bool = False) -> None:
    if temperature is not None or not temperature_optional:
        _check_vec(temperature, "temperature", batch, (torch.float32,), logits, "logits")
    if top_k is not None:
        _check_vec(top_k, "top_k", batch, (torch.int32,), logits, "logits")
    if top_p is not None:
        _check_vec(top_p, "top_p", batch, (torch.float32,), logits, "logits")
    if saguaro_x is not None:
        _check_vec(saguaro_x, "saguaro_x", batch, (torch.float32,), logits, "logits")
    if not isinstance(saguaro_f, int) or isinstance(saguaro_f, bool) or not 0 <= saguaro_f < logits.shape[-1]:
        raise ValueError(f"ssdk: saguaro_f must be an int in [0, vocab), got {saguaro_f!r}")


def _split_offset(seed: int, offset: int | torch.Tensor, ref_t: torch.Tensor) -> tuple[int, int, torch.Tensor | None]:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise ValueError(f"ssdk: seed must be an int in [0, 2**64), got {seed!r}")
    if isinstance(offset, torch.Tensor):
        _check_vec(offset, "offset", 1, (torch.int64,), ref_t, "logits")
        return seed, 0, offset
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 2**63:
        raise ValueError(f"ssdk: offset must be a non-negative int or an int64 tensor of shape [1], got {offset!r}")
    return seed, offset, None



def _check_draft_ids(ids: torch.Tensor, batch: int, k: int, ref: torch.Tensor, ref_name: str) -> None:
    """draft_token_ids: a contiguous [batch, k] int32/int64 tensor on ref's device."""
    check_tensor(ids, "draft_token_ids")
    check_dtype(ids, "draft_token_ids", INDEX_DTYPES)
    check_same_device(ids, "draft_token_ids", ref, ref_name)
    check_shape(ids, "draft_token_ids", (batch, k))
    if not ids.is_contiguous():
        raise ValueError("ssdk: draft_token_ids must be contiguous")

def _signed64(seed: int) -> int:
    """The schema's int is int64: pass the 64-bit seed's bit pattern."""
    return seed - 2**64 if seed >= 2**63 else seed


def _out(t: torch.Tensor | None, name: str, shape: tuple[int, ...], dtype: torch.dtype, ref_t: torch.Tensor) -> torch.Tensor:
    if t is None:
        return torch.empty(shape, dtype=dtype, device=ref_t.device)
    check_tensor(t, name)
    check_dtype(t, name, (dtype,))
    check_same_device(t, name, ref_t, "logits")
    check_shape(t, name, shape)
    if not t.is_contiguous():
        raise ValueError(f"ssdk: {name} must be contiguous, got strides {t.stride()}")
    return t


def sample_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None = None,
                  top_p: torch.Tensor | None = None, seed: int = 0, offset: int | torch.Tensor = 0, *,
                  saguaro_x: torch.Tensor | None = None, saguaro_f: int = 0,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Sample one token per row (the engine's autoregressive sampler).

    Parameters
    ----------
    logits : [B, V] fp32/fp16/bf16 (rows may be strided, last dim contiguous).
    temperature : [B] float32; 0 = greedy argmax.
    top_k : optional [B] int32.  top_p : optional [B] float32.  (See the module docstring.)
    seed, offset : Philox key and counter offset (offset: int or int64 device tensor [1]).
    saguaro_x, saguaro_f : optional [B] float32 Saguaro factor x on the top-(F+1) tokens (drafting).
    out : optional [B] int64.

    Returns
    -------
    [B] int64 token ids: a sample of the distribution above (Gumbel-max over l / T + log w with the
    uniforms of Philox row b, tag 1), deterministic for (seed, offset).
    """
    _check_logits(logits, "logits", 2)
    batch = logits.shape[0]
    _check_sampling(batch, logits, temperature, top_k, top_p, saguaro_x, saguaro_f)
    seed, off, off_t = _split_offset(seed, offset, logits)
    out = _out(out, "out", (batch,), torch.int64, logits)
    _backend.impl("sample_tokens", logits.device)(out, logits, temperature, top_k, top_p, saguaro_x, saguaro_f,
                                                  _signed64(seed), off, off_t)
    return out


def probs_from_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor | None = None,
                      top_p: torch.Tensor | None = None, *, saguaro_x: torch.Tensor | None = None,
                      saguaro_f: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """[B, V] float32 sampling distribution of each row (one-hot argmax where T == 0); the draft
    probabilities :func:`verify_chain` / :func:`chain_speculative_sampling` expect."""
    _check_logits(logits, "logits", 2)
    batch, vocab = logits.shape
    _check_sampling(batch, logits, temperature, top_k, top_p, saguaro_x, saguaro_f)
    out = _out(out, "out", (batch, vocab), torch.float32, logits)
    _backend.impl("probs_from_logits", logits.device)(out, logits, temperature, top_k, top_p, saguaro_x, saguaro_f)
    return out


def saguaro_rescale(probs: torch.Tensor, x: torch.Tensor, F: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Saguaro draft rescaling: multiply the top-(F+1) probabilities of each row (ties at the boundary
    included) by x[b] and renormalize (SSD's apply_sampler_x_rescaling, on [B, V] rows).

    Parameters
    ----------
    probs : [B, V] float32.  x : [B] float32 in (0, 1].  F : fan-out (F + 1 tokens are rescaled).
    out : optional [B, V] float32 (may be ``probs`` itself).
    """
    check_tensor(probs, "probs")
    check_dtype(probs, "probs", (torch.float32,))
    if probs.dim() != 2 or not probs.is_contiguous():
        raise ValueError(f"ssdk: probs must be a contiguous [B, V] tensor, got shape {tuple(probs.shape)}")
    _check_vec(x, "x", probs.shape[0], (torch.float32,), probs, "probs")
    if not isinstance(F, int) or isinstance(F, bool) or not 0 <= F < probs.shape[1]:
        raise ValueError(f"ssdk: F must be an int in [0, vocab), got {F!r}")
    out = _out(out, "out", tuple(probs.shape), torch.float32, probs)
    _backend.impl("saguaro_rescale", probs.device)(out, probs, x, F)
    return out


def chain_speculative_sampling(draft_probs: torch.Tensor, draft_token_ids: torch.Tensor, target_probs: torch.Tensor,
                               maybe_output_accepted_token_num: torch.Tensor | None = None,
                               maybe_output_emitted_draft_token_num: torch.Tensor | None = None,
                               seed: int = 0, offset: int | torch.Tensor = 0
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop-in for ``flashinfer.sampling.chain_speculative_sampling`` (same inputs and outputs; explicit
    seed/offset instead of a torch.Generator).

    Parameters
    ----------
    draft_probs : [B, K, V] float32.  draft_token_ids : [B, K] int32/int64.  target_probs : [B, K+1, V] float32.
    maybe_output_accepted_token_num, maybe_output_emitted_draft_token_num : optional [B] int32, incremented in place.

    Returns
    -------
    output_token_ids : [B, K+1] int32, accepted draft tokens, then the token sampled from
        norm(max(p - q, 0)) at the first rejection (or the bonus from p_K), then -1.
    output_accepted_token_num : [B] int32 (+= tests passed, every position tested independently).
    output_emitted_draft_token_num : [B] int32 (+= accepted draft tokens).
    """
    _check_logits(target_probs, "target_probs", 3)
    _check_logits(draft_probs, "draft_probs", 3)
    check_dtype(target_probs, "target_probs", (torch.float32,))
    check_dtype(draft_probs, "draft_probs", (torch.float32,))
    batch, k1, vocab = target_probs.shape
    check_shape(draft_probs, "draft_probs", (batch, k1 - 1, vocab))
    check_same_device(draft_probs, "draft_probs", target_probs, "target_probs")
    _check_draft_ids(draft_token_ids, batch, k1 - 1, target_probs, "target_probs")
    seed, off, off_t = _split_offset(seed, offset, target_probs)
    tokens = torch.empty(batch, k1, dtype=torch.int32, device=target_probs.device)
    accepted = maybe_output_accepted_token_num
    emitted = maybe_output_emitted_draft_token_num
    if accepted is None:
        accepted = torch.zeros(batch, dtype=torch.int32, device=target_probs.device)
    if emitted is None:
        emitted = torch.zeros(batch, dtype=torch.int32, device=target_probs.device)
    _check_vec(accepted, "maybe_output_accepted_token_num", batch, (torch.int32,), target_probs, "target_probs")
    _check_vec(emitted, "maybe_output_emitted_draft_token_num", batch, (torch.int32,), target_probs, "target_probs")
    _backend.impl("chain_speculative_sampling", target_probs.device)(
        tokens, accepted, emitted, draft_probs, draft_token_ids, target_probs, _signed64(seed), off, off_t)
    return tokens, accepted, emitted


def verify_chain(target_logits: torch.Tensor, draft_token_ids: torch.Tensor, temperature: torch.Tensor | None = None,
                 *, draft_logits: torch.Tensor | None = None, draft_probs: torch.Tensor | None = None,
                 top_k: torch.Tensor | None = None, top_p: torch.Tensor | None = None,
                 saguaro_x: torch.Tensor | None = None, saguaro_f: int = 0, seed: int = 0,
                 offset: int | torch.Tensor = 0, out_tokens: torch.Tensor | None = None,
                 accept_len: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Verify K chained draft tokens per request from the target logits, fused (no host sync).

    Rows with T == 0 (or temperature=None: all) are greedy: draft token i is accepted iff it equals the
    argmax of target row i; the first mismatch (or row K) emits the argmax. Rows with T > 0 are
    speculative sampling: accept x_i iff u_i * q_i(x_i) < p_i(x_i); at the first rejection emit a sample
    of norm(max(p_i - q_i, 0)); after K acceptances a sample of p_K. p and q follow the module
    docstring (same T, top-k, top-p for target and draft; Saguaro rescales the draft only).
    K = 0 is plain sampling of one token from p_0 (no draft needed): out_tokens is [B, 1], accept_len 0.

    Parameters
    ----------
    target_logits : [B, K+1, V] fp32/fp16/bf16.  draft_token_ids : [B, K] int32/int64.
    temperature : optional [B] float32 (None = all greedy).
    draft_logits : optional [B, K, V] (same dtype as target_logits), the draft model's logits, or
    draft_probs : optional [B, K, V] float32, the draft distribution q as sampled (already filtered and
        rescaled; Saguaro/top-k/top-p are then not re-applied to it). One of them is needed for T > 0.
    top_k, top_p, saguaro_x : optional [B]; saguaro_f : F.
    seed, offset : Philox (see the module docstring).
    out_tokens : optional [B, K+1] int32; accept_len : optional [B] int32.

    Returns
    -------
    out_tokens : [B, K+1] int32 accepted draft tokens, the recovery/bonus token, then -1.
    accept_len : [B] int32 accepted draft tokens (out_tokens[b, accept_len[b]] is the new token).
    """
    _check_logits(target_logits, "target_logits", 3)
    batch, k1, vocab = target_logits.shape
    if k1 < 1:
        raise ValueError(f"ssdk: target_logits must have K+1 >= 1 rows per request, got shape {tuple(target_logits.shape)}")
    _check_draft_ids(draft_token_ids, batch, k1 - 1, target_logits, "target_logits")
    _check_sampling(batch, target_logits, temperature, top_k, top_p, saguaro_x, saguaro_f, temperature_optional=True)
    if draft_logits is not None and draft_probs is not None:
        raise ValueError("ssdk: pass draft_logits or draft_probs, not both")
    if draft_logits is not None:
        _check_logits(draft_logits, "draft_logits", 3)
        check_dtype(draft_logits, "draft_logits", (target_logits.dtype,))
        check_shape(draft_logits, "draft_logits", (batch, k1 - 1, vocab))
        check_same_device(draft_logits, "draft_logits", target_logits, "target_logits")
    if draft_probs is not None:
        _check_logits(draft_probs, "draft_probs", 3)
        check_dtype(draft_probs, "draft_probs", (torch.float32,))
        check_shape(draft_probs, "draft_probs", (batch, k1 - 1, vocab))
        check_same_device(draft_probs, "draft_probs", target_logits, "target_logits")
    if temperature is not None and draft_logits is None and draft_probs is None and k1 > 1:
        raise ValueError("ssdk: stochastic verification (temperature given) needs draft_logits or draft_probs")
    if saguaro_x is not None and draft_logits is None:
        raise ValueError("ssdk: saguaro_x rescales draft_logits; with draft_probs rescale them when drafting")
    seed, off, off_t = _split_offset(seed, offset, target_logits)
    out_tokens = _out(out_tokens, "out_tokens", (batch, k1), torch.int32, target_logits)
    accept_len = _out(accept_len, "accept_len", (batch,), torch.int32, target_logits)
    _backend.impl("verify_chain", target_logits.device)(
        out_tokens, accept_len, target_logits, draft_token_ids, draft_logits, draft_probs, temperature, top_k, top_p,
        saguaro_x, saguaro_f, _signed64(seed), off, off_t)
    return out_tokens, accept_len


def verify_tree(target_logits: torch.Tensor, tokens: torch.Tensor, parents: torch.Tensor, qo_indptr: torch.Tensor,
                max_depth: int, temperature: torch.Tensor | None = None, *, top_k: torch.Tensor | None = None,
                top_p: torch.Tensor | None = None, seed: int = 0, offset: int | torch.Tensor = 0,
                accept_len: torch.Tensor | None = None, accept_nodes: torch.Tensor | None = None,
                out_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Verify a batch of draft trees with deterministic candidates from the target logits, fused.

    Tree format as in :mod:`ssdk.ops.tree`; local node 0 of each request is its root (the last committed
    token, not verified) and row qo_indptr[b]+i of target_logits is the target's prediction after node i.
    Other nodes with parent -1 are never reached. Walk from the root; at node n try its children in
    index order. Greedy (T == 0): accept the first child whose token is argmax p_n. T > 0: accept child c
    with probability p'(c) under the residual p' (p_n with the already rejected children zeroed,
    renormalized); if none is accepted (or n is a leaf, or max_depth is reached) emit a sample of p'.
    The output distribution equals the target's exactly (SSD's cache-miss backup is the chain case).

    Parameters
    ----------
    target_logits : [N_total, V] fp32/fp16/bf16.  tokens : [N_total] int32/int64 node tokens (roots ignored).
    parents : [N_total] int32.  qo_indptr : [B+1] int32 (every request needs n_b >= 1).
    max_depth : D, the most draft tokens one request can accept.
    temperature, top_k, top_p : optional [B] (temperature None = all greedy).  seed, offset : Philox.
    accept_len, accept_nodes, out_tokens : optional outputs [B], [B, D+1], [B, D+1] int32.

    Returns
    -------
    accept_len : [B] int32 accepted draft tokens.
    accept_nodes : [B, D+1] int32 local node indices of the accepted path, starting with the root 0, then -1.
    out_tokens : [B, D+1] int32 accepted tokens, then the new (bonus/recovery) token, then -1.
    """
    _check_logits(target_logits, "target_logits", 2)
    n_total, vocab = target_logits.shape
    check_tensor(tokens, "tokens")
    check_dtype(tokens, "tokens", INDEX_DTYPES)
    check_same_device(tokens, "tokens", target_logits, "target_logits")
    check_shape(tokens, "tokens", (n_total,))
    for name, t in (("parents", parents), ("qo_indptr", qo_indptr)):
        check_tensor(t, name)
        check_dtype(t, name, (torch.int32,))
        check_same_device(t, name, target_logits, "target_logits")
        if t.dim() != 1 or not t.is_contiguous():
            raise ValueError(f"ssdk: {name} must be a contiguous 1-D tensor, got shape {tuple(t.shape)}")
    check_shape(parents, "parents", (n_total,))
    if qo_indptr.numel() < 1:
        raise ValueError("ssdk: qo_indptr must have shape [B+1]")
    batch = qo_indptr.numel() - 1
    _check_sampling(batch, target_logits, temperature, top_k, top_p, None, 0, temperature_optional=True)
    if not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < 0:
        raise ValueError(f"ssdk: max_depth must be a non-negative int, got {max_depth!r}")
    seed, off, off_t = _split_offset(seed, offset, target_logits)
    accept_len = _out(accept_len, "accept_len", (batch,), torch.int32, target_logits)
    accept_nodes = _out(accept_nodes, "accept_nodes", (batch, max_depth + 1), torch.int32, target_logits)
    out_tokens = _out(out_tokens, "out_tokens", (batch, max_depth + 1), torch.int32, target_logits)
    _backend.impl("verify_tree", target_logits.device)(
        accept_len, accept_nodes, out_tokens, target_logits, tokens, parents, qo_indptr, temperature, top_k, top_p,
        _signed64(seed), off, off_t)
    return accept_len, accept_nodes, out_tokens


def verify_tree_greedy(predicts: torch.Tensor, accept_index: torch.Tensor, accept_token_num: torch.Tensor,
                       candidates: torch.Tensor, retrive_index: torch.Tensor, retrive_next_token: torch.Tensor,
                       retrive_next_sibling: torch.Tensor, target_predict: torch.Tensor) -> None:
    """Drop-in for sgl-kernel ``verify_tree_greedy`` (in place, same arguments and semantics).

    Parameters
    ----------
    predicts : [B * num_draft] int32 (written at accepted positions).  accept_index : [B, num_spec_step] int32.
    accept_token_num : [B] int32.  candidates, retrive_index, retrive_next_token, retrive_next_sibling,
    target_predict : [B, num_draft] int64 (retrive_index holds flat indices into predicts / target_predict).
    """
    check_tensor(candidates, "candidates")
    if candidates.dim() != 2:
        raise ValueError(f"ssdk: candidates must have shape [B, num_draft], got {tuple(candidates.shape)}")
    batch, num_draft = candidates.shape
    for name, t in (("candidates", candidates), ("retrive_index", retrive_index),
                    ("retrive_next_token", retrive_next_token), ("retrive_next_sibling", retrive_next_sibling),
                    ("target_predict", target_predict)):
        check_tensor(t, name)
        check_dtype(t, name, (torch.int64,))
        check_same_device(t, name, candidates, "candidates")
        check_shape(t, name, (batch, num_draft))
        if not t.is_contiguous():
            raise ValueError(f"ssdk: {name} must be contiguous")
    for name, t in (("predicts", predicts), ("accept_index", accept_index), ("accept_token_num", accept_token_num)):
        check_tensor(t, name)
        check_dtype(t, name, (torch.int32,))
        check_same_device(t, name, candidates, "candidates")
        if not t.is_contiguous():
            raise ValueError(f"ssdk: {name} must be contiguous")
    check_shape(predicts, "predicts", (batch * num_draft,))
    if accept_index.dim() != 2 or accept_index.shape[0] != batch or accept_index.shape[1] < 1:
        raise ValueError(f"ssdk: accept_index must have shape [{batch}, num_spec_step >= 1], got "
                         f"{tuple(accept_index.shape)}")
    check_shape(accept_token_num, "accept_token_num", (batch,))
    _backend.impl("verify_tree_greedy", candidates.device)(predicts, accept_index, accept_token_num, candidates,
                                                           retrive_index, retrive_next_token, retrive_next_sibling,
                                                           target_predict)


# ---- torch backend: the references with the schemas' out-variant signatures
def _offset_value(offset: int, offset_tensor: torch.Tensor | None) -> int:
    return offset + (int(offset_tensor.item()) if offset_tensor is not None else 0)


def _unsigned64(seed: int) -> int:
    return seed + 2**64 if seed < 0 else seed


def _torch_sample_tokens(out, logits, temperature, top_k, top_p, saguaro_x, saguaro_f, seed, offset, offset_tensor):
    out.copy_(ref.sample_tokens(logits, temperature, top_k, top_p, _unsigned64(seed),
                                _offset_value(offset, offset_tensor), saguaro_x, saguaro_f))


def _torch_probs_from_logits(out, logits, temperature, top_k, top_p, saguaro_x, saguaro_f):
    out.copy_(ref.probs_from_logits(logits, temperature, top_k, top_p, saguaro_x, saguaro_f))


def _torch_saguaro_rescale(out, probs, x, F):
    out.copy_(ref.saguaro_rescale(probs, x, F))


def _torch_chain_speculative_sampling(tokens, accepted, emitted, draft_probs, draft_token_ids, target_probs, seed,
                                      offset, offset_tensor):
    t, a, e = ref.chain_speculative_sampling(draft_probs, draft_token_ids, target_probs, _unsigned64(seed),
                                             _offset_value(offset, offset_tensor))
    tokens.copy_(t)
    accepted.add_(a)
    emitted.add_(e)


def _torch_verify_chain(out_tokens, accept_len, target_logits, draft_token_ids, draft_logits, draft_probs,
                        temperature, top_k, top_p, saguaro_x, saguaro_f, seed, offset, offset_tensor):
    t, n = ref.verify_chain(target_logits, draft_token_ids, temperature, draft_logits, draft_probs, top_k, top_p,
                            saguaro_x, saguaro_f, _unsigned64(seed), _offset_value(offset, offset_tensor))
    out_tokens.copy_(t)
    accept_len.copy_(n)


def _torch_verify_tree(accept_len, accept_nodes, out_tokens, target_logits, tokens, parents, qo_indptr, temperature,
                       top_k, top_p, seed, offset, offset_tensor):
    n, nodes, t = ref.verify_tree(target_logits, tokens, parents, qo_indptr, temperature, accept_nodes.shape[1] - 1,
                                  top_k, top_p, _unsigned64(seed), _offset_value(offset, offset_tensor))
    accept_len.copy_(n)
    accept_nodes.copy_(nodes)
    out_tokens.copy_(t)


def _triton(name: str):
    def run(*args):
        from ..triton_kernels import verify as triton_verify

        return getattr(triton_verify, name)(*args)

    return run


_OPS = {
    "sample_tokens": _torch_sample_tokens,
    "probs_from_logits": _torch_probs_from_logits,
    "saguaro_rescale": _torch_saguaro_rescale,
    "chain_speculative_sampling": _torch_chain_speculative_sampling,
    "verify_chain": _torch_verify_chain,
    "verify_tree": _torch_verify_tree,
    "verify_tree_greedy": ref.verify_tree_greedy_sgl,
}
for _name, _torch_impl in _OPS.items():
    _backend.register(_name, cuda=getattr(torch.ops.ssdk, _name) if _has_cuda_op(_name) else None,
                      triton=_triton(_name), torch=_torch_impl)
    if _has_cuda_op(_name):
        # Out-variants: they mutate their outputs and return nothing.
        torch.library.register_fake(f"ssdk::{_name}")(lambda *args: None)
