"""Tiny synthetic checkpoints written once per test session (HF format, real tokenizers when installed)."""

from __future__ import annotations

import pytest

from ssdk.testing import synthetic


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    # Several shards + an index (the loader's streaming path), untied head, llama3 rope scaling.
    return synthetic.write_checkpoint("tiny-llama", tmp_path_factory.mktemp("tiny-llama"), seed=1,
                                      max_shard_bytes=48 << 20)


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory):
    # One file, tied embeddings, q/k norm, head_dim (64) != hidden / heads (32).
    return synthetic.write_checkpoint("tiny-qwen3", tmp_path_factory.mktemp("tiny-qwen3"), seed=2)


@pytest.fixture(scope="session", params=["tiny_llama", "tiny_qwen3"])
def tiny_model(request):
    return request.getfixturevalue(request.param)
