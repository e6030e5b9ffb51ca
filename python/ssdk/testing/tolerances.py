"""One table of float tolerances (atol, rtol) per dtype, used by every kernel test."""

from __future__ import annotations

import torch

TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-3, 2e-3),
    torch.bfloat16: (1e-2, 1.6e-2),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None,
                 scale: float = 1.0) -> None:
    """torch.testing.assert_close with the table's tolerances for ``dtype`` (default: actual's), x scale."""
    atol, rtol = TOLERANCES[dtype or actual.dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol * scale, rtol=rtol * scale)


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill an output buffer with NaN (or -1 for integers) so unwritten elements fail the comparison."""
    return t.fill_(float("nan") if t.is_floating_point() else -1)
