"""unimask.train: one training loop for every objective mixture (single process, torchrun DDP/FSDP2),
with exact resume, atomic keep-last-K checkpoints, metrics and periodic per-objective validation."""

from unimask.train.config import DataSection, ModelSection, ObjectiveSpec, OptimSection, TrainConfig
from unimask.train.trainer import Trainer, TrainResult, infer_backbone, train

__all__ = ["DataSection", "ModelSection", "ObjectiveSpec", "OptimSection", "TrainConfig", "Trainer", "TrainResult",
           "infer_backbone", "train"]
