"""transformers references for the engine tests.

``fp32_attention`` is registered as a transformers attention implementation that computes softmax
attention in fp32 with one rounding at the end, as ssdk's attention kernels do (stock bf16 SDPA rounds
the probabilities to bf16 before P @ V, a deliberate difference of the kernels, not of the model code).
With it, everything else (embedding, RMSNorm, RoPE, q/k norm, SwiGLU, residual adds, the LM head) is
transformers' own code, so the engine's greedy tokens must equal transformers' exactly.
"""

from __future__ import annotations

import torch


def fp32_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """query [1, Hq, T, D], key/value [1, Hkv, S, D] (unpadded batch 1: keys S-T+i and earlier are
    visible to query i) -> ([1, T, Hq, D] in query's dtype, None)."""
    if query.shape[0] != 1:
        raise ValueError("fp32_attention serves unpadded batch-1 generation only")
    t, s = query.shape[2], key.shape[2]
    group = query.shape[1] // key.shape[1]
    q = query[0].transpose(0, 1).float()                                   # [T, Hq, D]
    k = key[0].transpose(0, 1).float().repeat_interleave(group, dim=1)     # [S, Hq, D]
    v = value[0].transpose(0, 1).float().repeat_interleave(group, dim=1)
    scores = torch.einsum("ihd,jhd->hij", q, k) * scaling
    visible = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
    scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.exp(scores - torch.logsumexp(scores, dim=-1)[..., None])
    return torch.einsum("hij,jhd->ihd", probs, v).to(query.dtype).unsqueeze(0), None


_MODELS: dict[tuple, object] = {}
_GREEDY: dict[tuple, tuple[list[int], torch.Tensor]] = {}


def load_hf(path, dtype: torch.dtype, device: str = "cpu", attention: str = "ssdk_fp32"):
    """transformers' model for a checkpoint folder (cached per session)."""
    import transformers

    key = (str(path), dtype, device, attention)
    if key in _MODELS:
        return _MODELS[key]

    if attention == "ssdk_fp32":
        transformers.AttentionInterface.register("ssdk_fp32", fp32_attention)
        transformers.AttentionMaskInterface.register("ssdk_fp32", lambda *args, **kwargs: None)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation=attention)
    _MODELS.clear()  # keep one model alive at a time
    _MODELS[key] = model.to(device).eval()
    return _MODELS[key]


@torch.inference_mode()
def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> tuple[list[int], torch.Tensor]:
    """transformers' greedy ``generate``: (new tokens, [max_new_tokens, vocab] fp32 logits of each step)."""
    key = (id(model), tuple(prompt), max_new_tokens)
    if key not in _GREEDY:
        ids = torch.tensor([prompt], device=model.device)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, output_logits=True,
                             return_dict_in_generate=True)
        logits = torch.cat([step.float().cpu() for step in out.logits])
        _GREEDY[key] = (out.sequences[0, len(prompt):].tolist(), logits)
    return _GREEDY[key]


@torch.inference_mode()
def hf_logits(model, prompt: list[int]) -> torch.Tensor:
    """[len(prompt), vocab] logits of a full forward (model dtype)."""
    return model(torch.tensor([prompt], device=model.device)).logits[0]
