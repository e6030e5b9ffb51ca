"""Linear layers sharded over the tensor-parallel group (Megatron style).

Column-parallel layers split the output features (each rank computes a slice, no communication);
row-parallel layers split the input features and all-reduce the partial sums. Each parameter carries a
``weight_loader(param, tensor, shard_id)`` that copies this rank's slice of a checkpoint tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ... import ops
from ..parallel import current_tp


def _expect(param: nn.Parameter, loaded: torch.Tensor, dim: int, full: int, what: str) -> None:
    if loaded.dim() != param.dim() or loaded.shape[dim] != full or any(
            loaded.shape[d] != param.shape[d] for d in range(param.dim()) if d != dim):
        shape = list(param.shape)
        shape[dim] = full
        raise ValueError(f"expected shape {tuple(shape)} for {what}, got {tuple(loaded.shape)}")


class LinearBase(nn.Module):
    batch_invariant = False  # set by the model runner (EngineConfig.batch_invariant)

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.tp = current_tp()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.weight.weight_loader = self.weight_loader
        self.bias = None
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False)
            self.bias.weight_loader = self.weight_loader

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_invariant:
            return ops.batch_invariant_linear(x, self.weight, self.bias)
        if x.is_cuda:  # skinny (decode) batches take ssdk's GEMV kernel, larger ones cuBLAS
            return ops.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)  # CPU: ops.linear's torch backend upcasts the weight


class ColumnParallelLinear(LinearBase):
    """y = x W^T with W's rows (output features) split over ranks."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        tp = current_tp().size
        if out_features % tp:
            raise ValueError(f"ssdk: output features ({out_features}) must be divisible by the TP size ({tp})")
        super().__init__(in_features, out_features // tp, bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        rows = param.shape[0]
        _expect(param, loaded, 0, rows * self.tp.size, "the full tensor")
        param.data.copy_(loaded.narrow(0, self.tp.rank * rows, rows))


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel projections of the same input in one GEMM (gate_proj | up_proj)."""

    def __init__(self, in_features: int, output_sizes: list[int], bias: bool = False):
        self.output_sizes = output_sizes
        super().__init__(in_features, sum(output_sizes), bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        tp = self.tp.size
        size = self.output_sizes[shard_id] // tp
        offset = sum(self.output_sizes[:shard_id]) // tp
        target = param.data.narrow(0, offset, size)
        _expect(target, loaded, 0, self.output_sizes[shard_id], f"part {shard_id}")
        target.copy_(loaded.narrow(0, self.tp.rank * size, size))


class QKVParallelLinear(ColumnParallelLinear):
    """q_proj | k_proj | v_proj in one GEMM; each rank holds num_heads/tp query and num_kv_heads/tp KV heads."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, bias: bool = False):
        tp = current_tp().size
        if num_heads % tp or num_kv_heads % tp:
            raise ValueError(f"ssdk: attention heads ({num_heads}) and KV heads ({num_kv_heads}) must be divisible "
                             f"by the TP size ({tp})")
        self.sizes = {"q": num_heads * head_dim // tp, "k": num_kv_heads * head_dim // tp,
                      "v": num_kv_heads * head_dim // tp}
        super().__init__(hidden_size, (num_heads + 2 * num_kv_heads) * head_dim, bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        size = self.sizes[shard_id]
        offset = {"q": 0, "k": self.sizes["q"], "v": self.sizes["q"] + self.sizes["k"]}[shard_id]
        target = param.data.narrow(0, offset, size)
        _expect(target, loaded, 0, size * self.tp.size, f"{shard_id}_proj")
        target.copy_(loaded.narrow(0, self.tp.rank * size, size))


class RowParallelLinear(LinearBase):
    """y = x W^T with W's columns (input features) split over ranks; partial sums all-reduced."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        tp = current_tp().size
        if in_features % tp:
            raise ValueError(f"ssdk: input features ({in_features}) must be divisible by the TP size ({tp})")
        super().__init__(in_features // tp, out_features, bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        if param.dim() == 1:  # the bias is added once, by rank 0
            _expect(param, loaded, 0, param.shape[0], "the bias")
            param.data.copy_(loaded if self.tp.rank == 0 else torch.zeros_like(loaded))
            return
        cols = param.shape[1]
        _expect(param, loaded, 1, cols * self.tp.size, "the full tensor")
        param.data.copy_(loaded.narrow(1, self.tp.rank * cols, cols))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tp.all_reduce_(super().forward(x))
