"""Markers: cpu (always), triton_interp (Triton under TRITON_INTERPRET=1 on CPU), cuda, multi_gpu.

A test marked cuda/multi_gpu is skipped, with the reason, where no (or too few) GPUs are visible;
a triton_interp test is skipped unless TRITON_INTERPRET=1 (CI sets it for that run).
"""

from __future__ import annotations

import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    gpus = torch.cuda.device_count()
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    for item in items:
        if "cuda" in item.keywords and gpus == 0:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "multi_gpu" in item.keywords and gpus < 2:
            item.add_marker(pytest.mark.skip(reason="needs two GPUs"))
        if "triton_interp" in item.keywords and not interp:
            item.add_marker(pytest.mark.skip(reason="set TRITON_INTERPRET=1 to run Triton on the CPU"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
