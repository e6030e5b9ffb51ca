"""Model config (parsed from an HF config.json, validated) and engine config (what LLM() takes)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

ARCHITECTURES = ("LlamaForCausalLM", "Qwen3ForCausalLM")
SYNTHETIC_PREFIX = "synthetic:"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CheckpointError(ValueError):
    """A model folder (or config) ssdk cannot load; the message says what is wrong and where."""


def _dtype(value: str | torch.dtype | None, what: str) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    name = str(value).removeprefix("torch.")
    if name not in _DTYPES:
        raise CheckpointError(f"ssdk: {what} must be one of {sorted(_DTYPES)}, got {value!r}")
    return _DTYPES[name]


@dataclass(frozen=True)
class ModelConfig:
    """The fields of config.json the engine uses (Llama-3.x and Qwen-3 decoder-only models)."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    torch_dtype: torch.dtype | None
    source: str = ""

    @property
    def qk_norm(self) -> bool:
        return self.architecture == "Qwen3ForCausalLM"

    def num_parameters(self) -> int:
        h, d = self.hidden_size, self.head_dim
        attn = h * (self.num_heads + 2 * self.num_kv_heads) * d + self.num_heads * d * h
        layer = attn + 3 * h * self.intermediate_size + 2 * h + (2 * d if self.qk_norm else 0)
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + embed + h

    @classmethod
    def from_dict(cls, cfg: dict, source: str = "config") -> ModelConfig:
        """Validate an HF config dict; every error names ``source`` and the offending key."""
        archs = cfg.get("architectures") or []
        arch = next((a for a in archs if a in ARCHITECTURES), None)
        if arch is None:
            raise CheckpointError(f"ssdk: {source}: unsupported architecture {archs or cfg.get('model_type')!r}; "
                                  f"ssdk supports {list(ARCHITECTURES)}")

        def need(key: str, kind: type = int):
            if key not in cfg or cfg[key] is None:
                raise CheckpointError(f"ssdk: {source}: missing required key {key!r}")
            value = cfg[key]
            if kind is int and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise CheckpointError(f"ssdk: {source}: {key} must be a positive int, got {value!r}")
            if kind is float and not isinstance(value, (int, float)):
                raise CheckpointError(f"ssdk: {source}: {key} must be a number, got {value!r}")
            return value

        hidden, heads = need("hidden_size"), need("num_attention_heads")
        kv_heads = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or hidden // heads
        if heads % kv_heads:
            raise CheckpointError(f"ssdk: {source}: num_attention_heads ({heads}) must be a multiple of "
                                  f"num_key_value_heads ({kv_heads})")
        if cfg.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"ssdk: {source}: hidden_act {cfg['hidden_act']!r} is not supported (only silu)")
        if cfg.get("mlp_bias"):
            raise CheckpointError(f"ssdk: {source}: mlp_bias=true is not supported")
        rope = cfg.get("rope_parameters") or {}  # transformers >= 5 folds rope_theta into rope_parameters
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        if scaling is not None:
            kind = scaling.get("rope_type", scaling.get("type"))
            if kind not in ("default", "llama3"):
                raise CheckpointError(f"ssdk: {source}: rope_scaling type {kind!r} is not supported "
                                      "(supported: default, llama3)")
            scaling = None if kind == "default" else dict(scaling)
        eos = cfg.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        return cls(
            architecture=arch, vocab_size=need("vocab_size"), hidden_size=hidden,
            intermediate_size=need("intermediate_size"), num_layers=need("num_hidden_layers"), num_heads=heads,
            num_kv_heads=kv_heads, head_dim=head_dim, rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta), rope_scaling=scaling,
            max_position_embeddings=need("max_position_embeddings"),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=bool(cfg.get("attention_bias", False)), bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids, torch_dtype=_dtype(cfg.get("torch_dtype") or cfg.get("dtype"), "torch_dtype"),
            source=source,
        )

    @classmethod
    def from_folder(cls, path: str | Path) -> ModelConfig:
        folder = Path(path)
        if not folder.is_dir():
            raise CheckpointError(f"ssdk: model path {str(folder)!r} is not a folder (expected an HF checkpoint "
                                  f"folder, or 'synthetic:NAME')")
        file = folder / "config.json"
        if not file.is_file():
            raise CheckpointError(f"ssdk: {folder} has no config.json (is this an HF checkpoint folder?)")
        try:
            cfg = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"ssdk: {file} is not valid JSON: {err}") from None
        generation = folder / "generation_config.json"
        if generation.is_file():  # its eos list (e.g. Llama-3 instruct's <|eot_id|>) wins
            eos = json.loads(generation.read_text()).get("eos_token_id")
            if eos is not None:
                cfg = {**cfg, "eos_token_id": eos}
        return cls.from_dict(cfg, str(file))


@dataclass
class EngineConfig:
    """Engine settings (the keyword arguments of :class:`ssdk.LLM`).

    model : HF checkpoint folder, or "synthetic:NAME" (random weights in memory, see ssdk.testing.synthetic).
    dtype : bf16 or fp16 (the attention kernels' dtypes); None = the checkpoint's torch_dtype when it is
        one of those, else bf16 (fp32 checkpoints are cast).
    device : "cuda" / "cpu"; default cuda when available.
    tensor_parallel_size : processes (GPUs) the model is split over.
    enforce_eager : no CUDA graphs.
    max_num_seqs : running sequences at most (also the largest CUDA-graph batch).
    max_num_batched_tokens : tokens per prefill step (longer prompts are prefilled in chunks).
    max_model_len : prompt + output tokens per sequence (default min(4096, max_position_embeddings)).
    page_size : KV-cache page size in tokens.
    gpu_memory_utilization : fraction of GPU memory the process may use (weights + KV + activations).
    num_kv_pages : KV pages (overrides the memory-based sizing; CPU default fits max_num_seqs full sequences).
    attention_backend : "ssdk" (ssdk.ops.tree_attention) or "flashinfer" (GPU; implies enforce_eager).
    seed : seed of unseeded sampling and of synthetic weights.
    batch_invariant : every row's logits bitwise independent of the batch (rows, requests, verify-chain
        length): linear layers and attention run through ``ssdk.ops.batch_invariant_*`` (fixed tiles, no
        split-K / split-KV; the other ops are row-invariant as they are), so greedy speculative decoding equals greedy AR token for token on
        the GPU too. Costs decode speed (a Triton GEMM instead of cuBLAS, attention without split-KV);
        tensor_parallel_size=1 and attention_backend="ssdk" only.
    """

    model: str
    dtype: torch.dtype | str | None = None
    device: str | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 8192
    max_model_len: int | None = None
    page_size: int = 16
    gpu_memory_utilization: float = 0.9
    num_kv_pages: int | None = None
    attention_backend: str = "ssdk"
    seed: int = 0
    batch_invariant: bool = False
    model_config: ModelConfig = field(init=False)

    def __post_init__(self) -> None:
        if self.model.startswith(SYNTHETIC_PREFIX):
            from ..testing import synthetic

            name = self.model.removeprefix(SYNTHETIC_PREFIX)
            self.model_config = ModelConfig.from_dict(synthetic.config(name), self.model)
        else:
            self.model_config = ModelConfig.from_folder(self.model)
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device not in ("cuda", "cpu"):
            raise ValueError(f"ssdk: device must be 'cuda' or 'cpu', got {self.device!r}")
        requested = _dtype(self.dtype, "dtype")
        if requested == torch.float32:
            raise ValueError("ssdk: dtype float32 is not supported (the attention kernels take fp16/bf16)")
        checkpoint = self.model_config.torch_dtype
        self.dtype = requested or (checkpoint if checkpoint in (torch.float16, torch.bfloat16) else torch.bfloat16)
        mc = self.model_config
        self.max_model_len = min(self.max_model_len or 4096, mc.max_position_embeddings)
        for name in ("tensor_parallel_size", "max_num_seqs", "max_num_batched_tokens", "page_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ssdk: {name} must be a positive int, got {value!r}")
        tp = self.tensor_parallel_size
        if mc.num_kv_heads % tp or mc.vocab_size % tp or mc.intermediate_size % tp:
            raise ValueError(f"ssdk: tensor_parallel_size={tp} must divide num_key_value_heads ({mc.num_kv_heads}), "
                             f"vocab_size ({mc.vocab_size}) and intermediate_size ({mc.intermediate_size})")
        if self.device == "cuda" and tp > torch.cuda.device_count():
            raise ValueError(f"ssdk: tensor_parallel_size={tp} but only {torch.cuda.device_count()} GPUs are visible")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"ssdk: gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.attention_backend not in ("ssdk", "flashinfer"):
            raise ValueError(f"ssdk: attention_backend must be 'ssdk' or 'flashinfer', got {self.attention_backend!r}")
        if self.attention_backend == "flashinfer" and self.device != "cuda":
            raise ValueError("ssdk: attention_backend='flashinfer' needs device='cuda'")
        if self.batch_invariant and (tp > 1 or self.attention_backend != "ssdk"):
            raise ValueError("ssdk: batch_invariant=True needs tensor_parallel_size=1 (an all-reduce's algorithm "
                             "depends on the message size) and attention_backend='ssdk'")
        if self.device == "cpu" or self.attention_backend == "flashinfer":
            self.enforce_eager = True
