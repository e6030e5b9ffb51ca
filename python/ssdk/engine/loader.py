"""Checkpoint loading: HF safetensors folders (streamed, one tensor at a time) and tokenizers.

``load_weights`` routes each checkpoint tensor to its parameter's ``weight_loader`` (which copies this
rank's shard, converting dtype and device), so the peak extra memory is one tensor, never a second copy
of the model. Unknown, missing or mis-shaped tensors are errors that name the file and the tensor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from .config import SYNTHETIC_PREFIX, CheckpointError

# Checkpoint entries that are not parameters of the engine's models.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def checkpoint_files(folder: str | Path) -> list[Path]:
    """The safetensors shards of an HF checkpoint folder (from the index when there is one)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"ssdk: {index} is not a valid safetensors index ({err!r})") from None
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"ssdk: {index} names shards that are not in the folder: {missing}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        other = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
        hint = f" (found {other[:3]}: only safetensors checkpoints are supported)" if other else ""
        raise CheckpointError(f"ssdk: {folder} has no *.safetensors weight files{hint}")
    return files


def iter_checkpoint(folder: str | Path, progress: bool = False) -> Iterator[tuple[str, torch.Tensor, str]]:
    """Yield (name, tensor on the CPU, file name), one tensor at a time."""
    from safetensors import SafetensorError, safe_open
    from tqdm import tqdm

    files = checkpoint_files(folder)
    for file in tqdm(files, desc="Loading safetensors shards", unit="shard", disable=not progress):
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for name in handle.keys():
                    yield name, handle.get_tensor(name), file.name
        except SafetensorError as err:
            raise CheckpointError(f"ssdk: {file} is not a readable safetensors file: {err}") from None


def _default_loader(param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
    if tuple(loaded.shape) != tuple(param.shape):
        raise ValueError(f"expected shape {tuple(param.shape)}, got {tuple(loaded.shape)}")
    param.data.copy_(loaded)


def load_weights(model: nn.Module, tensors: Iterable[tuple[str, torch.Tensor, str]]) -> None:
    """Copy checkpoint tensors (HF names) into ``model``; every parameter must be covered exactly."""
    params = dict(model.named_parameters())  # a tied lm_head shares embed_tokens' parameter
    packed: dict[str, tuple[str, object]] = getattr(model, "packed_modules_mapping", {})
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    expected = set()
    for name in params:  # the checkpoint names each parameter stands for
        parts = [hf for hf, (fused, _) in packed.items() if f".{fused}." in name]
        if parts:
            expected.update(name.replace(f".{packed[hf][0]}.", f".{hf}.") for hf in parts)
        else:
            expected.add(name)
    seen: set[str] = set()
    for name, tensor, origin in tensors:
        if name.endswith(_IGNORED_SUFFIXES) or (tied and name == "lm_head.weight"):
            continue
        target, shard = name, None
        for hf, (fused, shard_id) in packed.items():
            if f".{hf}." in name:
                target, shard = name.replace(f".{hf}.", f".{fused}."), shard_id
                break
        if target not in params:
            raise CheckpointError(f"ssdk: {origin}: unexpected tensor {name!r} (not a parameter of "
                                  f"{type(model).__name__})")
        if name in seen:
            raise CheckpointError(f"ssdk: {origin}: tensor {name!r} appears twice in the checkpoint")
        param = params[target]
        try:
            getattr(param, "weight_loader", _default_loader)(param, tensor, shard)
        except ValueError as err:
            raise CheckpointError(f"ssdk: {origin}: tensor {name!r}: {err}") from None
        seen.add(name)
    missing = sorted(expected - seen)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(f"ssdk: the checkpoint lacks {len(missing)} tensors of {type(model).__name__}: {shown}")


class Tokenizer:
    """A ``tokenizers`` tokenizer.json (what HF fast tokenizers load): text <-> token ids."""

    def __init__(self, tokenizer_json: str, source: str):
        from tokenizers import Tokenizer as HFTokenizer

        self.source = source
        self._tok = HFTokenizer.from_str(tokenizer_json)

    def encode(self, text: str) -> list[int]:
        """Token ids with the checkpoint's special tokens (Llama-3: <|begin_of_text|> first)."""
        return self._tok.encode(text, add_special_tokens=True).ids

    def decode(self, token_ids: list[int]) -> str:
        return self._tok.decode(token_ids, skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


def load_tokenizer(model: str) -> Tokenizer | None:
    """The tokenizer of a checkpoint folder (None when it has no tokenizer.json), or of a synthetic model."""
    if model.startswith(SYNTHETIC_PREFIX):
        from ..testing import synthetic

        text, source = synthetic.tokenizer_json(synthetic.config(model.removeprefix(SYNTHETIC_PREFIX)))
        return Tokenizer(text, source)
    file = Path(model) / "tokenizer.json"
    if not file.is_file():
        return None
    try:
        return Tokenizer(file.read_text(), str(file))
    except Exception as err:  # tokenizers raises plain Exceptions
        raise CheckpointError(f"ssdk: {file} could not be loaded by the tokenizers library: {err}") from None


def synthetic_tensors(model: str, dtype: torch.dtype, device: torch.device | str,
                      seed: int) -> Iterator[tuple[str, torch.Tensor, str]]:
    """Seeded random weights for "synthetic:NAME", drawn on ``device`` (no checkpoint on disk)."""
    from ..testing import synthetic

    cfg = synthetic.config(model.removeprefix(SYNTHETIC_PREFIX))
    for name, tensor in synthetic.random_state_dict(cfg, seed, dtype, device):
        yield name, tensor, model
