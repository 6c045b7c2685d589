"""Model checkpoints: ``model.safetensors`` + ``config.json`` + ``tokenizer.json`` in one directory.

The directory is written atomically (temp dir + rename), so a crash leaves the previous
checkpoint intact. Loading checks the weights against the config and names what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unimask.config import ConfigError, from_dict
from unimask.io import atomic_dir
from unimask.model.config import ModelConfig
from unimask.model.transformer import Transformer
from unimask.tokenizer import Tokenizer

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, truncated or does not match its config."""


def save_checkpoint(path: str | Path, model: Transformer, tokenizer: Tokenizer, extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "unimask": "1"})
        meta = {"model": asdict(model.cfg), "extra": extra or {}}
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2, default=str))
        tokenizer.save(tmp)
    return path


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    file = path / CONFIG
    if not file.is_file():
        raise CheckpointError(f"{path} is not a unimask checkpoint: no {CONFIG}")
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON ({e}); the checkpoint is damaged") from e
    if "model" not in meta:
        raise CheckpointError(f"{file} has no 'model' section; is this a Hugging Face directory? "
                              "convert it with `unimask convert DIR OUT` (or pass it where a checkpoint is taken)")
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> tuple[Transformer, Tokenizer, dict]:
    """Load ``(model, tokenizer, extra)``; the model is in eval mode on ``device`` (default cpu)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    meta = read_checkpoint_meta(path)
    try:
        cfg = from_dict(ModelConfig, meta["model"])
    except ConfigError as e:
        raise CheckpointError(f"{path / CONFIG}: {e}") from e
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"cannot read {path / WEIGHTS} ({e}); the file is missing or truncated") from e
    model = Transformer(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {names[:4]}" for label, names in
            (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if names
        )
        raise CheckpointError(f"weights in {path} do not match its config ({detail})")
    model.load_state_dict(state, strict=False)
    tokenizer = Tokenizer.load(path)
    tokenizer.check_vocab(cfg.vocab_size)
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer, meta.get("extra", {})
