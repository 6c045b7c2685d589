"""``unimask eval loss``: a checkpoint's held-out loss per objective on a prepared data dir.

The scoring itself (fixed corruption per example index) is ``unimask.train.validation``, which
the trainer's periodic evals share.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from unimask.model import load_checkpoint
from unimask.objectives import build_objective
from unimask.train.distributed import resolve_device
from unimask.train.sources import PackedSource
from unimask.train.validation import validation_loss


def checkpoint_validation_loss(
    checkpoint: str | Path,
    data_dir: str | Path,
    objectives: Sequence[str] = ("causal",),
    seq_len: int = 256,
    num_examples: int = 64,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, float]:
    """Load a checkpoint and score it on the ``val`` split of a prepared data dir, per objective."""
    dev = resolve_device(device)
    from unimask.model.convert import ensure_checkpoint

    model, tokenizer, _ = load_checkpoint(ensure_checkpoint(checkpoint))  # an HF directory is converted
    model.to(dev)
    src = PackedSource(data_dir, "val", seq_len, epochs=1)
    raws = []
    for raw in src:
        raws.append(raw)
        if len(raws) >= num_examples:
            break
    if not raws:
        raise ValueError(f"{data_dir} has no validation windows of {seq_len} tokens; lower seq_len")
    fns = {name: build_objective(name, tokenizer) for name in objectives}
    amp = torch.bfloat16 if dev.type == "cuda" else None
    return validation_loss(model, raws, fns, tokenizer.pad_id, dev, batch_size, amp, seed)
