"""unimask.train: one training loop for every objective mixture (single process, torchrun DDP/FSDP2),
with exact resume, atomic keep-last-K checkpoints, metrics and periodic per-objective validation."""

from unimask.train.config import DataSection, ModelSection, ObjectiveSpec, OptimSection, TrainConfig

__all__ = ["DataSection", "ModelSection", "ObjectiveSpec", "OptimSection", "TrainConfig", "Trainer", "TrainResult", "train"]


def __getattr__(name: str):
    # The loop pulls in torch.distributed and friends; keep `import unimask.train` light for the CLI.
    if name in ("Trainer", "TrainResult", "train", "infer_backbone"):
        from unimask.train import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
