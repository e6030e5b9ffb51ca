"""Backend parametrization shared by the op tests: (backend, device) pairs with their markers."""

import pytest

BACKEND_DEVICES = [
    pytest.param("torch", "cpu", marks=pytest.mark.cpu, id="torch-cpu"),
    pytest.param("triton", "cpu", marks=pytest.mark.triton_interp, id="triton-interp"),
    pytest.param("cuda", "cuda", marks=pytest.mark.cuda, id="cuda"),
    pytest.param("triton", "cuda", marks=pytest.mark.cuda, id="triton-cuda"),
]
