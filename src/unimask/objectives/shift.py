"""Shifted prediction (Dream): the logits of a token's predecessor predict it.

unimask's diffusion objectives score a masked token at its own position. A model trained the
Dream way predicts token i from position i-1, so fine-tuning it must score each masked target
at its *predecessor* (``AttentionStructure.predecessors``: the visible token one RoPE position
earlier, preferring its own kind) -- the previous position under bidirectional attention, the
previous noised token inside a noised block, or the clean token before the block at its first
position. Causal (AR) labels already predict the next token and stay where they are; a target
with no predecessor (a document's first token) cannot be predicted by such a model and is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from unimask.objectives.example import IGNORE, TrainingExample


def shift_targets(ex: TrainingExample, mask_id: int) -> TrainingExample:
    """Move every scored masked token's label and weight onto its predecessor."""
    moved = (ex.labels != IGNORE) & (ex.input_ids == mask_id)
    if not bool(moved.any()):
        return ex
    index, found = ex.attention.predecessors()
    index, found = index[0], found[0]
    labels, weights = ex.labels.clone(), ex.loss_weights.clone()
    labels[moved], weights[moved] = IGNORE, 0.0
    src = moved & found
    dst = index[src]
    kept = labels[dst]
    clash = (kept != IGNORE) & (kept != ex.labels[src])
    if bool(clash.any()):
        raise ValueError(f"shifted targets collide with different labels at positions {dst[clash].tolist()[:4]}")
    labels[dst] = ex.labels[src]
    weights = weights.index_add(0, dst, ex.loss_weights[src])
    return replace(ex, labels=labels, loss_weights=weights)


@dataclass
class Shifted:
    """Wrap an objective so its masked targets are scored the shifted way (``shift_targets``)."""

    inner: Any
    mask_id: int

    def __call__(self, raw: Any, rng: np.random.Generator) -> TrainingExample:
        return shift_targets(self.inner(raw, rng), self.mask_id)

    def __getattr__(self, name: str) -> Any:  # max_length, name, ... of the wrapped objective
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


__all__ = ["Shifted", "shift_targets"]
