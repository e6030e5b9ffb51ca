"""ssdk: kernels for speculative (and speculative-speculative) decoding.

Public kernel API: :mod:`ssdk.ops`. Importing ssdk never fails because of the compiled extension:
if ``ssdk._C`` is missing or was built against another torch, ssdk warns once and the ops fall back
to Triton / PyTorch.
"""

from __future__ import annotations

import warnings

import torch

__version__ = "0.1.0"

REBUILD_HINT = "rebuild with: pip install --no-build-isolation --no-deps --force-reinstall ."


def _load_extension() -> tuple[object | None, str]:
    """Import ssdk._C (which registers torch.ops.ssdk.*); return (module or None, status)."""
    try:
        from . import _build_config
    except ImportError:
        _build_config = None
    if _build_config is not None and not _build_config.cuda_built:
        return None, f"not built ({_build_config.reason})"
    try:
        from . import _C
    except (ImportError, OSError) as err:
        if _build_config is None:
            return None, "not built (no _build_config; package used from a source tree)"
        warnings.warn(f"ssdk: the CUDA extension failed to load ({err}); using Triton/PyTorch fallbacks. "
                      f"{REBUILD_HINT}", RuntimeWarning, stacklevel=3)
        return None, f"failed to load: {err}"
    if _C.torch_version != torch.__version__:
        warnings.warn(f"ssdk: the CUDA extension was built for torch {_C.torch_version} but torch "
                      f"{torch.__version__} is running; using Triton/PyTorch fallbacks. {REBUILD_HINT}",
                      RuntimeWarning, stacklevel=3)
        return None, f"built for torch {_C.torch_version}, running {torch.__version__}"
    return _C, f"loaded (archs {_C.cuda_archs})"


_C, EXTENSION_STATUS = _load_extension()

from . import ops  # noqa: E402  (ops consult _C at import)



def __getattr__(name: str):
    """``ssdk.LLM`` / ``ssdk.SamplingParams`` import the engine on first use (``import ssdk`` stays light)."""
    if name == "LLM":
        from .engine.llm import LLM

        return LLM
    if name == "SamplingParams":
        from .engine.sampling import SamplingParams

        return SamplingParams
    raise AttributeError(f"module 'ssdk' has no attribute {name!r}")


__all__ = ["LLM", "SamplingParams", "ops", "EXTENSION_STATUS", "__version__"]
