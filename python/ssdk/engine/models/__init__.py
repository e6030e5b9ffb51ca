"""Model classes by HF architecture name."""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig


def model_class(config: ModelConfig) -> type[nn.Module]:
    from .llama import LlamaForCausalLM
    from .qwen3 import Qwen3ForCausalLM

    return {"LlamaForCausalLM": LlamaForCausalLM, "Qwen3ForCausalLM": Qwen3ForCausalLM}[config.architecture]
