"""What every objective shares: the raw inputs it accepts and small pure helpers.

Objectives read a ``Window`` (a packed token window with per-token document numbers, as the
data loader yields) or a ``TurnSequence`` (a rendered agent trajectory). They never import the
data package: the ``Window`` protocol below is all they need.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from unimask.objectives.example import IGNORE


class Window(Protocol):
    tokens: Tensor  # long [L]
    doc_ids: Tensor  # long [L]; -1 marks padding


def doc_pieces(doc_ids: Tensor) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the runs of equal, non-negative document ids."""
    d = doc_ids.tolist()
    pieces, start = [], 0
    for i in range(1, len(d) + 1):
        if i == len(d) or d[i] != d[start]:
            if d[start] >= 0:
                pieces.append((start, i))
            start = i
    return pieces


def continues(doc_ids: Tensor) -> Tensor:
    """``out[i]`` is True when token i is in the same (real) document as token i-1."""
    d = doc_ids.long()
    return torch.cat([torch.zeros(1, dtype=torch.bool), (d[1:] == d[:-1]) & (d[1:] >= 0)])


def next_token_labels(tokens: Tensor, same_segment: Tensor) -> Tensor:
    """``labels[i] = tokens[i+1]`` where ``same_segment[i+1]`` says i+1 continues i's segment."""
    labels = torch.full_like(tokens, IGNORE)
    labels[:-1] = torch.where(same_segment[1:], tokens[1:], torch.full_like(tokens[1:], IGNORE))
    return labels


def normalised_weights(labels: Tensor, scale: float = 1.0) -> Tensor:
    """Weight ``scale / n_targets`` on every scored position (a per-example mean)."""
    scored = labels != IGNORE
    n = int(scored.sum())
    return scored.float() * (scale / n) if n else torch.zeros(labels.shape, dtype=torch.float32)


def sample_span_mask(length: int, ratio: float, mean_span: float, rng: np.random.Generator,
                     max_spans: int) -> list[tuple[int, int]]:
    """Non-overlapping, non-adjacent spans covering about ``ratio`` of ``length`` tokens.

    CodeGen2's order: the ratio is given, span lengths are drawn (geometric around
    ``mean_span``) until they reach it, then positions are placed uniformly among the gaps.
    """
    if length < 2 or ratio <= 0:
        return []
    target = max(1, int(round(length * ratio)))
    target = min(target, length - 1)
    lengths: list[int] = []
    while sum(lengths) < target and len(lengths) < max_spans:
        lengths.append(int(min(rng.geometric(1.0 / max(mean_span, 1.0)), target - sum(lengths))))
    lengths = [n for n in lengths if n > 0]
    n_keep = length - sum(lengths)
    if n_keep < len(lengths) + 1:  # need a kept token between spans
        lengths = lengths[: max(0, n_keep - 1)]
        if not lengths:
            return []
    # Distribute kept tokens into len(lengths)+1 gaps; inner gaps get at least one token.
    k = len(lengths)
    free = n_keep - (k - 1)
    cuts = np.sort(rng.integers(0, free + 1, size=k))
    gaps = np.diff(np.concatenate([[0], cuts, [free]]))
    gaps[1:-1] += 1
    spans, pos = [], 0
    for i, n in enumerate(lengths):
        pos += int(gaps[i])
        spans.append((pos, pos + n))
        pos += n
    return spans
