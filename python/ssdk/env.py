"""``python -m ssdk.env``: torch / CUDA / GPU, the build config, and the backend each op resolves to."""

from __future__ import annotations

import importlib.util
import platform

import torch

import ssdk
from ssdk.ops import _backend


def report() -> str:
    lines = [f"ssdk {ssdk.__version__}  python {platform.python_version()}",
             f"torch {torch.__version__}  (CUDA {torch.version.cuda})"]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {props.name}  sm_{props.major}{props.minor}  {props.multi_processor_count} SMs  "
                     f"{props.total_memory / 2**30:.0f} GiB  x{torch.cuda.device_count()}")
    else:
        lines.append("GPU: none visible")
    triton = importlib.util.find_spec("triton")
    lines.append(f"triton: {__import__('triton').__version__ if triton else 'not installed'}")
    try:
        from ssdk import _build_config as cfg

        lines.append(f"build: cuda_built={cfg.cuda_built} archs={cfg.cuda_archs} reason={cfg.reason!r}")
        lines.append(f"build: against torch {cfg.torch_version} (CUDA {cfg.torch_cuda}); nvcc {cfg.nvcc}; "
                     f"CUTLASS {cfg.cutlass_dir or 'not found'}")
    except ImportError:
        lines.append("build: no _build_config (running from a source tree)")
    lines.append(f"extension: {ssdk.EXTENSION_STATUS}")
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    lines.append(f"backends for {device_type} tensors:")
    for op in _backend.registered_ops():
        try:
            choice = _backend.resolve(op, device_type)
        except RuntimeError as err:
            choice = f"ERROR: {err}"
        lines.append(f"  {op:28s} {choice}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
