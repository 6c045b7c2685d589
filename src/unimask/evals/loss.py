"""Validation loss per objective, for the trainer's periodic evals and ``unimask eval loss``.

Each objective is scored alone on the same held-out raw examples, with per-example RNG seeded
by the example's index, so the corruption (spans, masks, noise level) is identical from one
evaluation to the next and numbers are comparable across checkpoints and runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unimask.objectives.example import Batch, TrainingExample, collate, example_loss


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def batches_loss(
    model: torch.nn.Module, batches: Iterable[Batch], device: torch.device, amp_dtype: torch.dtype | None = None
) -> tuple[float, int]:
    """Sum of example losses and the number of examples over ``batches``."""
    total, count = 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        with autocast_context(device, amp_dtype):
            logits = model(batch.input_ids, batch.attention)
        losses = example_loss(logits, batch.labels, batch.loss_weights)
        total += float(losses.sum())
        count += losses.shape[0]
    return total, count


def objective_batches(
    raws: Sequence[Any], objective: Callable[[Any, np.random.Generator], TrainingExample], pad_id: int,
    batch_size: int, seed: int = 0, offset: int = 0,
) -> Iterator[Batch]:
    """Apply one objective to held-out raw examples (RNG per example index) and batch them."""
    examples = [objective(raw, np.random.default_rng([seed, offset + i])) for i, raw in enumerate(raws)]
    for i in range(0, len(examples), batch_size):
        yield collate(examples[i : i + batch_size], pad_id)


def validation_loss(
    model: torch.nn.Module,
    raws: Sequence[Any],
    objectives: dict[str, Callable[[Any, np.random.Generator], TrainingExample]],
    pad_id: int,
    device: torch.device,
    batch_size: int = 8,
    amp_dtype: torch.dtype | None = None,
    seed: int = 0,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    offset: int = 0,
) -> dict[str, float]:
    """``{"<objective>": mean example loss, "<objective>_ppl": exp(loss)}`` over ``raws``.

    ``reduce`` (e.g. an all-reduce SUM across ranks, each holding a slice of ``raws``) is applied to
    ``[loss_sum, count]`` before dividing; ``offset`` is the global index of ``raws[0]``.
    """
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    try:
        for name, objective in objectives.items():
            total, count = batches_loss(
                model, objective_batches(raws, objective, pad_id, batch_size, seed, offset), device, amp_dtype
            )
            t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
            if reduce is not None:
                t = reduce(t)
            if t[1] > 0:
                loss = float(t[0] / t[1])
                out[name] = loss
                out[f"{name}_ppl"] = math.exp(min(loss, 50.0))
    finally:
        model.train(was_training)
    return out


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
    from unimask.model import load_checkpoint
    from unimask.objectives import build_objective
    from unimask.train.distributed import resolve_device
    from unimask.train.sources import PackedSource

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
