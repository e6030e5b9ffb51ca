"""Vocabulary-parallel embedding and LM head: each rank holds vocab_size / tp rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ... import ops
from ..parallel import current_tp


class VocabParallelEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.tp = current_tp()
        if num_embeddings % self.tp.size:
            raise ValueError(f"ssdk: vocab size ({num_embeddings}) must be divisible by the TP size ({self.tp.size})")
        self.num_embeddings = num_embeddings
        self.shard = num_embeddings // self.tp.size
        self.start = self.tp.rank * self.shard
        self.weight = nn.Parameter(torch.empty(self.shard, embedding_dim), requires_grad=False)
        self.weight.weight_loader = self.weight_loader

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        if tuple(loaded.shape) != (self.num_embeddings, param.shape[1]):
            raise ValueError(f"expected shape {(self.num_embeddings, param.shape[1])}, got {tuple(loaded.shape)}")
        param.data.copy_(loaded.narrow(0, self.start, self.shard))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.start
        mine = (local >= 0) & (local < self.shard)
        out = F.embedding(local.clamp(0, self.shard - 1), self.weight) * mine.unsqueeze(-1).to(self.weight.dtype)
        return self.tp.all_reduce_(out)  # exactly one rank contributes each row: the sum is exact


class ParallelLMHead(VocabParallelEmbedding):
    """logits = hidden @ W^T over the full vocabulary (shards gathered on every rank)."""

    batch_invariant = False  # set by the model runner (EngineConfig.batch_invariant)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.batch_invariant:
            return self.tp.all_gather_last(ops.batch_invariant_linear(hidden, self.weight))
        if hidden.is_cuda:  # skinny (decode) batches take ssdk's GEMV kernel, larger ones cuBLAS
            return self.tp.all_gather_last(ops.linear(hidden, self.weight))
        return self.tp.all_gather_last(F.linear(hidden, self.weight))
