"""Public kernel API. Each op resolves to cuda -> triton -> torch (see ssdk.ops._backend)."""

from ._backend import get_impl, registered_ops, resolve, use_backend
from .attention import tree_attention
from .norm import fused_add_rmsnorm, rmsnorm

__all__ = ["fused_add_rmsnorm", "get_impl", "registered_ops", "resolve", "rmsnorm", "tree_attention", "use_backend"]
