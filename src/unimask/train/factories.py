"""What a ``TrainConfig`` builds before the loop starts: the model, the tokenizer and the raw
example sources (packed windows or agent trajectories)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from unimask.config import ConfigError, from_dict
from unimask.model import Transformer
from unimask.presets import model_preset
from unimask.tokenizer import Tokenizer
from unimask.train.config import TrainConfig
from unimask.train.sources import PackedSource, RawSource, TrajectorySource


def model_config(model: torch.nn.Module) -> Any:
    """The model's config object (``Transformer.cfg``; ``.config`` for Hugging Face-style modules)."""
    return getattr(model, "cfg", None) or getattr(model, "config", None)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 natively: a CUDA GPU, or a CPU with AVX512-BF16 or AMX
    (where oneDNN's bf16 matmul runs 2-3x the fp32 rate; elsewhere bf16 is emulated, and slower)."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to know, stay in fp32
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def amp_dtype_for(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast (fp32 weights, fp32 softmax and loss) for ``dtype: bf16``, and for ``auto`` where
    the device multiplies bf16 natively; otherwise fp32."""
    if cfg.dtype == "fp32" or (cfg.dtype == "auto" and not native_bf16(device)):
        return None
    return torch.bfloat16


def build_model(cfg: TrainConfig, tokenizer: Any) -> torch.nn.Module:
    mcfg = model_preset(cfg.model.preset)
    overrides = dict(cfg.model.overrides)
    overrides.setdefault("vocab_size", tokenizer.vocab_size)
    valid = {f.name for f in dataclasses.fields(mcfg)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise ConfigError(f"model.overrides has unknown field {bad[0]!r}; ModelConfig fields: {', '.join(sorted(valid))}")
    base = {f.name: getattr(mcfg, f.name) for f in dataclasses.fields(mcfg) if f.init}
    mcfg = from_dict(type(mcfg), {**base, **overrides}, prefix="model.overrides.")
    return Transformer(mcfg)


def load_tokenizer(cfg: TrainConfig) -> Tokenizer:
    if cfg.data.tokenizer:
        return Tokenizer.load(cfg.data.tokenizer)
    if cfg.data.kind == "packed" and cfg.data.dir:
        return Tokenizer.load(cfg.data.dir)
    raise ConfigError("no tokenizer: set data.dir (a prepared data dir), data.tokenizer, or init_from")


def build_source(cfg: TrainConfig, tokenizer: Any, split: str, rank: int = 0, world_size: int = 1,
                 finite: bool = False) -> RawSource | None:
    """The ``split`` examples of this rank's shard (``finite``: one pass, for evaluation); None when
    a trajectory config has no such split."""
    d = cfg.data
    epochs = 1 if finite else None
    if d.kind == "packed":
        if not d.dir:
            raise ConfigError("data.kind=packed needs data.dir (run `unimask data prepare` first)")
        return PackedSource(d.dir, split, d.seq_len, rank, world_size, cfg.seed, epochs=epochs)
    path = d.train_path if split == "train" else d.val_path
    if not path:
        if split == "train":
            raise ConfigError("data.kind=trajectories needs data.train_path (a JSONL of {'turns': [...]})")
        return None
    return TrajectorySource(path, tokenizer, d.max_len, cfg.seed, epochs, rank, world_size)
