"""The thin engine: LLM -> scheduler + block manager -> model runner -> models -> layers -> ssdk.ops."""

from .llm import LLM, RequestOutput
from .sampling import SamplingParams

__all__ = ["LLM", "RequestOutput", "SamplingParams"]
