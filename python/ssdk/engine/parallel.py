"""Tensor-parallel group of the model being built (captured by each layer at construction).

Layers read :func:`current_tp` in ``__init__``, so a target model split over N ranks and a draft model
on one rank can live in the same process: build each inside its own ``with building(tp): ...``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TPGroup:
    rank: int = 0
    size: int = 1
    group: dist.ProcessGroup | None = None

    def all_reduce_(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` over the group in place (no-op for one rank)."""
        if self.size > 1:
            dist.all_reduce(x, group=self.group)
        return x

    def all_gather_last(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``x`` along the last dim (rank order)."""
        if self.size == 1:
            return x
        parts = torch.empty((self.size * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
        _all_gather(parts, x.contiguous(), group=self.group)
        return parts.view(self.size, *x.shape).movedim(0, -2).reshape(*x.shape[:-1], self.size * x.shape[-1])


# torch >= 2.14 renames all_gather_into_tensor (output = the inputs concatenated along dim 0)
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_current = TPGroup()


def current_tp() -> TPGroup:
    return _current


@contextlib.contextmanager
def building(tp: TPGroup) -> Iterator[None]:
    """Layers constructed inside the block shard themselves over ``tp``."""
    global _current
    previous, _current = _current, tp
    try:
        yield
    finally:
        _current = previous
