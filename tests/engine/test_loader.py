"""Checkpoint folders: synthetic writer output, tokenizers, and clear errors for bad folders."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from ssdk import LLM
from ssdk.engine.config import CheckpointError, EngineConfig, ModelConfig
from ssdk.engine.loader import checkpoint_files, load_tokenizer
from ssdk.testing import synthetic

pytestmark = pytest.mark.cpu


def test_synthetic_folder_is_hf_format(tiny_llama):
    files = checkpoint_files(tiny_llama)
    assert len(files) > 1 and (tiny_llama / "model.safetensors.index.json").is_file()
    index = json.loads((tiny_llama / "model.safetensors.index.json").read_text())
    cfg = synthetic.config("tiny-llama")
    assert set(index["weight_map"]) == set(synthetic.parameter_shapes(cfg))
    tensors = {}
    for f in files:
        tensors.update(load_file(f))
    expected = dict(synthetic.random_state_dict(cfg, seed=1, dtype=torch.float32))
    assert tensors.keys() == expected.keys()
    assert all(torch.equal(tensors[k], expected[k]) for k in tensors), "weights are a pure function of the seed"
    mc = ModelConfig.from_folder(tiny_llama)
    assert mc.architecture == "LlamaForCausalLM" and mc.rope_scaling["rope_type"] == "llama3"
    assert mc.eos_token_ids == (128001, 128008, 128009) and not mc.tie_word_embeddings


@pytest.mark.parametrize("name", sorted(synthetic.CONFIGS))
def test_named_configs_parse(name):
    cfg = synthetic.config(name)
    mc = ModelConfig.from_dict(cfg, name)
    total = sum(torch.Size(s).numel() for s in synthetic.parameter_shapes(cfg).values())
    assert mc.num_parameters() == total
    known = {"llama-3.2-1b": 1.24e9, "llama-3.1-8b": 8.03e9, "llama-3.1-70b": 70.6e9, "qwen3-0.6b": 0.60e9,
             "qwen3-8b": 8.19e9, "qwen3-32b": 32.8e9}
    if name in known:
        assert abs(total / known[name] - 1) < 0.01, f"{name}: {total / 1e9:.3f}B parameters"


def test_tokenizers_match_transformers(tiny_model):
    import transformers

    ours = load_tokenizer(str(tiny_model))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tiny_model))
    for text in ["Hello world, this is a test.", "def f(x):\n    return x ** 2  # 12345", "héllo 你好"]:
        ids = ours.encode(text)
        assert ids == theirs(text)["input_ids"]
        assert ours.decode(ids) == text
    if "llama" in str(tiny_model):
        assert ours.encode("hi")[0] == 128000  # <|begin_of_text|>


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen3"])
def test_fallback_tokenizer_keeps_special_ids(name, monkeypatch):
    monkeypatch.setattr(synthetic, "_wheel_file", lambda package, relative: None)
    synthetic._llama_tokenizer_json.cache_clear()
    synthetic._qwen_tokenizer_json.cache_clear()
    try:
        text, source = synthetic.tokenizer_json(synthetic.config(name))
    finally:
        synthetic._llama_tokenizer_json.cache_clear()
        synthetic._qwen_tokenizer_json.cache_clear()
    from ssdk.engine.loader import Tokenizer

    tok = Tokenizer(text, source)
    assert source == "byte-level fallback"
    eos = "<|eot_id|>" if name == "tiny-llama" else "<|im_end|>"
    expected_eos = 128009 if name == "tiny-llama" else 151645
    assert tok.token_to_id(eos) == expected_eos
    assert tok.decode(tok.encode("byte level ✓")) == "byte level ✓"


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_bad_folders_give_clear_errors(tiny_qwen3, tmp_path):
    with pytest.raises(CheckpointError, match="is not a folder"):
        LLM(str(tmp_path / "nope"), progress=False)
    with pytest.raises(CheckpointError, match="has no config.json"):
        LLM(str(tmp_path), progress=False)

    bad = _copy(tiny_qwen3, tmp_path / "arch")
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "architectures": ["MistralForCausalLM"]}))
    with pytest.raises(CheckpointError, match="unsupported architecture.*MistralForCausalLM"):
        LLM(str(bad), progress=False)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        LLM(str(bad), progress=False)
    (bad / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "hidden_size"}))
    with pytest.raises(CheckpointError, match="missing required key 'hidden_size'"):
        LLM(str(bad), progress=False)
    (bad / "config.json").write_text(json.dumps({**cfg, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}))
    with pytest.raises(CheckpointError, match="rope_scaling type 'yarn'"):
        LLM(str(bad), progress=False)

    weights = _copy(tiny_qwen3, tmp_path / "weights")
    tensors = load_file(weights / "model.safetensors")
    (weights / "model.safetensors").unlink()
    (weights / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no \\*.safetensors.*only safetensors"):
        LLM(str(weights), progress=False)
    (weights / "pytorch_model.bin").unlink()

    missing = dict(tensors)
    del missing["model.layers.1.self_attn.k_norm.weight"]
    save_file(missing, str(weights / "model.safetensors"))
    with pytest.raises(CheckpointError, match="lacks 1 tensors.*layers.1.self_attn.k_norm.weight"):
        LLM(str(weights), progress=False)

    wrong = {**tensors, "model.layers.0.mlp.up_proj.weight": torch.zeros(255, 128)}
    save_file(wrong, str(weights / "model.safetensors"))
    with pytest.raises(CheckpointError, match="model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight'.*"
                                              "expected shape \\(256, 128\\).*got \\(255, 128\\)"):
        LLM(str(weights), progress=False)

    extra = {**tensors, "model.layers.0.self_attn.extra.weight": torch.zeros(2)}
    save_file(extra, str(weights / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.layers.0.self_attn.extra.weight'"):
        LLM(str(weights), progress=False)

    (weights / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        LLM(str(weights), progress=False)


def test_index_naming_a_missing_shard(tiny_llama, tmp_path):
    bad = _copy(tiny_llama, tmp_path / "shards")
    (bad / checkpoint_files(bad)[-1].name).unlink()
    with pytest.raises(CheckpointError, match="names shards that are not in the folder"):
        LLM(str(bad), progress=False)


def test_engine_config_errors(tiny_qwen3):
    with pytest.raises(ValueError, match="dtype float32 is not supported"):
        EngineConfig(str(tiny_qwen3), dtype=torch.float32)
    with pytest.raises(ValueError, match="tensor_parallel_size=3 must divide"):
        EngineConfig(str(tiny_qwen3), tensor_parallel_size=3)
    with pytest.raises(ValueError, match="unknown synthetic model 'llama-9b'"):
        EngineConfig("synthetic:llama-9b")
    with pytest.raises(ValueError, match="attention_backend"):
        EngineConfig(str(tiny_qwen3), attention_backend="sdpa")
