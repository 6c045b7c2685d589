"""The contract between objectives and the trainer: ``TrainingExample`` and batching.

An objective turns one raw example (a packed token window, or an agent trajectory) into a
``TrainingExample``: what the model sees (``input_ids``), who attends to whom (per-token
attention fields, see ``unimask.model.attention``), and what is scored (``labels`` and
``loss_weights``). ``labels[i]`` is the token the logits at position ``i`` must predict
(``IGNORE`` where nothing is scored): causal objectives shift, diffusion objectives do not.

Loss convention: an example's loss is ``sum_i loss_weights[i] * CE(logits[i], labels[i])``;
objectives normalise their weights (e.g. ``1/num_targets``, or LLaDA's ``1/(t * L)``), and a
batch loss is the mean of its examples' losses. This keeps gradient accumulation and
data-parallel averaging exact whatever the objective mixture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from unimask.model.attention import AttentionStructure

IGNORE = -100


@dataclass
class TrainingExample:
    """One sequence ready for the model; every tensor is 1-D of the same length."""

    input_ids: Tensor  # long [L]
    labels: Tensor  # long [L], IGNORE where unscored
    loss_weights: Tensor  # float [L], 0 where unscored
    doc_ids: Tensor  # long [L]
    block_ids: Tensor  # long [L]
    noisy: Tensor  # bool [L]
    position_ids: Tensor  # long [L]
    objective: str = ""

    def __post_init__(self) -> None:
        n = self.input_ids.shape[0]
        for name in ("labels", "loss_weights", "doc_ids", "block_ids", "noisy", "position_ids"):
            t = getattr(self, name)
            if t.dim() != 1 or t.shape[0] != n:
                raise ValueError(f"TrainingExample.{name} has shape {tuple(t.shape)}, expected ({n},)")

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def attention(self) -> AttentionStructure:
        return AttentionStructure(
            self.doc_ids[None], self.block_ids[None], self.noisy[None], self.position_ids[None]
        )

    @classmethod
    def from_structure(
        cls,
        input_ids: Tensor,
        labels: Tensor,
        loss_weights: Tensor,
        attention: AttentionStructure,
        objective: str = "",
    ) -> TrainingExample:
        """Build from a batch-of-one ``AttentionStructure`` (as its constructors return)."""
        return cls(
            input_ids=input_ids.long(),
            labels=labels.long(),
            loss_weights=loss_weights.float(),
            doc_ids=attention.doc_ids[0],
            block_ids=attention.block_ids[0],
            noisy=attention.noisy[0],
            position_ids=attention.position_ids[0],
            objective=objective,
        )


@dataclass
class Batch:
    """Right-padded stack of examples; ``attention`` covers padding as its own document."""

    input_ids: Tensor  # [B, L]
    labels: Tensor  # [B, L]
    loss_weights: Tensor  # [B, L]
    attention: AttentionStructure
    objectives: list[str]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            self.loss_weights.to(device, non_blocking=True),
            self.attention.to(device),
            self.objectives,
        )


def collate(examples: Sequence[TrainingExample], pad_id: int, pad_to_multiple: int = 1) -> Batch:
    """Stack examples into a ``Batch``, right-padding to the longest (rounded up to a multiple)."""
    if not examples:
        raise ValueError("collate needs at least one example")
    L = max(len(e) for e in examples)
    L = -(-L // pad_to_multiple) * pad_to_multiple
    B = len(examples)

    def stack(name: str, fill: float | int | bool, dtype: torch.dtype) -> Tensor:
        out = torch.full((B, L), fill, dtype=dtype)
        for i, e in enumerate(examples):
            t = getattr(e, name)
            out[i, : t.shape[0]] = t
        return out

    return Batch(
        input_ids=stack("input_ids", pad_id, torch.long),
        labels=stack("labels", IGNORE, torch.long),
        loss_weights=stack("loss_weights", 0.0, torch.float32),
        attention=AttentionStructure(
            stack("doc_ids", -1, torch.long),
            stack("block_ids", 0, torch.long),
            stack("noisy", False, torch.bool),
            stack("position_ids", 0, torch.long),
        ),
        objectives=[e.objective for e in examples],
    )


def example_loss(logits: Tensor, labels: Tensor, loss_weights: Tensor) -> Tensor:
    """Per-example weighted CE ``[B]`` (float32), following the convention in the module docstring."""
    B, L, V = logits.shape
    ce = torch.nn.functional.cross_entropy(
        logits.float().reshape(B * L, V), labels.reshape(B * L), ignore_index=IGNORE, reduction="none"
    ).view(B, L)
    return (ce * loss_weights).sum(dim=1)
