"""Typed settings of a training run (``TrainConfig``): model, data, objectives, optimisation, I/O.

Loaded with ``unimask.config.load_config(TrainConfig, path, overrides)``; every section is a
dataclass so a YAML typo fails early with the list of valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from unimask.config import ConfigError


@dataclass
class ModelSection:
    """A named preset (``unimask.presets``) plus field overrides of its ``ModelConfig``."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    activation_checkpointing: bool = False
    compile: bool = False


@dataclass
class DataSection:
    """Where raw examples come from.

    ``kind="packed"``: fixed-length windows of a prepared data dir (``unimask data prepare``).
    ``kind="trajectories"``: agent trajectories, one JSON object ``{"turns": [{"role", "content"}...]}``
    per line of ``train_path`` (and ``val_path`` for validation).
    ``sharding="global"`` makes every rank read the same global stream and keep its own slice of
    each global batch, so a run is identical whatever the world size; ``"rank"`` gives each rank
    disjoint shards of a packed data dir (cheaper on big corpora, world-size dependent).
    """

    kind: Literal["packed", "trajectories"] = "packed"
    dir: str = ""
    seq_len: int = 256
    train_path: str = ""
    val_path: str = ""
    max_len: int = 1024
    sharding: Literal["global", "rank"] = "global"
    tokenizer: str = ""
    pad_to_multiple: int = 1  # e.g. 64 on GPU: fewer distinct shapes for torch.compile, aligned kernels


@dataclass
class ObjectiveSpec:
    """One entry of the objective mixture: a registered objective name, its weight and params."""

    name: str = "causal"
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimSection:
    lr: float = 3e-4
    min_lr: float = 3e-5
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 100
    grad_clip: float = 1.0
    fused: bool = True


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    objectives: list[ObjectiveSpec] = field(default_factory=lambda: [ObjectiveSpec()])
    optim: OptimSection = field(default_factory=OptimSection)
    micro_batch_size: int = 8
    grad_accum: int = 1
    steps: int = 1000
    token_budget: int = 0  # >0: steps = ceil(budget / tokens per step), overriding ``steps``
    eval_interval: int = 200
    eval_batches: int = 4
    checkpoint_interval: int = 500
    keep_last_k: int = 2
    log_interval: int = 10
    out_dir: str = "runs/default"
    init_from: str = ""
    resume: bool = True
    seed: int = 0
    device: str = "auto"
    dtype: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast where native (GPU, AVX512-BF16/AMX CPU)
    distributed: Literal["ddp", "fsdp"] = "ddp"
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        positive = {
            "micro_batch_size": self.micro_batch_size,
            "grad_accum": self.grad_accum,
            "eval_batches": self.eval_batches,
            "keep_last_k": self.keep_last_k,
            "log_interval": self.log_interval,
        }
        for name, v in positive.items():
            if v < 1:
                raise ConfigError(f"{name} must be >= 1, got {v}")
        if self.steps < 1 and self.token_budget <= 0:
            raise ConfigError("set steps >= 1 or token_budget > 0")
        if not self.objectives:
            raise ConfigError("objectives is empty: list at least one {name, weight, params}")
        if any(o.weight < 0 for o in self.objectives) or sum(o.weight for o in self.objectives) <= 0:
            raise ConfigError("objective weights must be >= 0 with a positive sum")
        if self.optim.warmup_steps < 0:
            raise ConfigError("optim.warmup_steps must be >= 0")
