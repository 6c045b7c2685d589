"""Masked diffusion (LLaDA) and block diffusion (BD3-LM) objectives.

* ``masked_diffusion``: t ~ U(eps, 1); each token is replaced by ``<|mask|>`` with probability t;
  the loss covers masked tokens, weighted 1/t and normalised by the sequence length; attention is
  bidirectional within each document.
* ``block_diffusion``: the x_t ⊕ x_0 layout -- noisy copies of fixed-size blocks (one t per
  block) followed by the clean sequence; a noisy block sees itself and the clean tokens strictly
  before it. ``clean_attention="block"`` is BD3-LM (block-causal clean half); ``"causal"`` is a
  context-causal block diffusion model (causal clean half, so prompts are KV-cached exactly like
  AR and an optional AR loss on the clean half is sound).

``noisy_copy_layout`` builds that layout for arbitrary noisy segments; the aligned agent SFT
objective reuses it with segments aligned to action turns.

``shift_targets`` turns any diffusion example into its *shifted* form (Dream's convention, kept by
AR-to-diffusion adaptation): the logits at position i predict token i+1, so a masked token is
predicted from its predecessor's state and an AR model's next-token circuits (induction above
all) carry over. A noisy block's first token is predicted by the clean token before the block,
which is exactly what the sampler reads from the KV-cached context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from unimask.model.attention import AttentionStructure, positions_from_segments
from unimask.objectives.base import Window, continues, next_token_labels
from unimask.objectives.example import IGNORE, TrainingExample

CleanAttention = Literal["causal", "block"]


def sample_t(rng: np.random.Generator, eps: float) -> float:
    return float(eps + (1.0 - eps) * rng.random())


def noisy_copy_layout(
    x0: Tensor,
    doc_ids: Tensor,
    segments: Sequence[tuple[int, int]],
    noise_masks: Sequence[Tensor],
    mask_id: int,
    clean_attention: CleanAttention = "causal",
    block_size: int = 1,
) -> tuple[Tensor, AttentionStructure, Tensor]:
    """``[x_0 ; noisy(seg_1) ; noisy(seg_2) ...]`` with its attention structure.

    Returns (input_ids, structure of batch 1, index into the full sequence of each noisy token's
    clean twin). Noisy segment (s, e) gets block id ``s`` (causal) or ``s // block_size`` (block);
    clean token i gets ``i`` or ``i // block_size``.
    """
    L = len(x0)
    doc = doc_ids.long()
    pos = positions_from_segments(doc[None])[0]
    idx = torch.arange(L)
    clean_blk = idx if clean_attention == "causal" else idx // block_size
    parts_ids, parts_doc, parts_blk, parts_pos, twins = [x0], [doc], [clean_blk], [pos], []
    for (s, e), m in zip(segments, noise_masks, strict=True):
        seg = x0[s:e].clone()
        seg[m] = mask_id
        parts_ids.append(seg)
        parts_doc.append(doc[s:e])
        parts_blk.append(torch.full((e - s,), s if clean_attention == "causal" else s // block_size))
        parts_pos.append(pos[s:e])
        twins.append(idx[s:e])
    ids = torch.cat(parts_ids)
    n_noisy = len(ids) - L
    att = AttentionStructure(
        torch.cat(parts_doc)[None],
        torch.cat(parts_blk)[None].long(),
        torch.cat([torch.zeros(L, dtype=torch.bool), torch.ones(n_noisy, dtype=torch.bool)])[None],
        torch.cat(parts_pos)[None].long(),
    )
    return ids, att, torch.cat(twins) if twins else torch.zeros(0, dtype=torch.long)


def draw_block_noise(ranges: Sequence[tuple[int, int]], block_size: int, rng: np.random.Generator,
                     eps: float) -> tuple[list[tuple[int, int]], list[Tensor], list[float]]:
    """Cut each ``(start, end)`` range into blocks of ``block_size`` from its start; draw one t per
    block and mask each of its tokens with probability t. Returns (segments, masks, ts)."""
    segments, masks, ts = [], [], []
    for start, end in ranges:
        for s in range(start, end, block_size):
            e = min(s + block_size, end)
            t = sample_t(rng, eps)
            segments.append((s, e))
            masks.append(torch.from_numpy(rng.random(e - s) < t))
            ts.append(t)
    return segments, masks, ts


def noisy_targets(x0: Tensor, ids: Tensor, twins: Tensor, segments: Sequence[tuple[int, int]],
                  masks: Sequence[Tensor], ts: Sequence[float], n: int) -> tuple[Tensor, Tensor]:
    """Labels and weights over a ``noisy_copy_layout``: each masked noisy token predicts its clean twin
    with weight ``1 / (t * n)``; the clean half (the first ``len(x0)`` positions) is left unscored."""
    L = len(x0)
    m = torch.cat(masks)
    tt = torch.cat([torch.full((e - s,), t) for (s, e), t in zip(segments, ts, strict=True)])
    labels = torch.full_like(ids, IGNORE)
    weights = torch.zeros(len(ids))
    labels[L:] = torch.where(m, x0[twins], torch.full_like(twins, IGNORE))
    weights[L:] = m.float() / (tt * n)
    return labels, weights


def shift_targets(ex: TrainingExample) -> TrainingExample:
    """Move each scored diffusion target to the position that precedes it (see the module docstring).

    The predecessor of a token at RoPE position p is the token at p - 1 in the same document and the
    same stream: its own noisy block if it has one there, else the clean stream. A target without a
    predecessor (a document's first token) is dropped. Where the predecessor already predicts the same
    token (a clean position's AR label) the weights add up.
    """
    labels, weights = torch.full_like(ex.labels, IGNORE), ex.loss_weights.clone()
    scored = ex.labels != IGNORE
    key = torch.stack([ex.doc_ids, ex.position_ids, torch.where(ex.noisy, ex.block_ids, -1)], 1).tolist()
    where = {tuple(k): i for i, k in enumerate(key)}
    diffusion = scored & (ex.noisy | ~ex.noisy.any())  # the noisy half, or every target of a one-stream layout
    keep = scored & ~diffusion
    labels[keep] = ex.labels[keep]
    weights[diffusion] = 0.0
    for i in diffusion.nonzero()[:, 0].tolist():
        doc, pos, blk = key[i]
        j = where.get((doc, pos - 1, blk))
        if j is None and blk != -1:
            j = where.get((doc, pos - 1, -1))
        if j is None:
            continue
        y = int(ex.labels[i])
        if labels[j] not in (IGNORE, y):
            raise AssertionError(f"shifted target {y} lands on position {j}, which already predicts {int(labels[j])}")
        labels[j] = y
        weights[j] += ex.loss_weights[i]
    return TrainingExample(ex.input_ids, labels, weights, ex.doc_ids, ex.block_ids, ex.noisy, ex.position_ids,
                           ex.objective)


@dataclass
class MaskedDiffusion:
    """LLaDA pre-training objective over packed windows."""

    tokenizer: object
    eps: float = 1e-3
    shift: bool = False
    name: str = "masked_diffusion"

    def max_length(self, n: int) -> int:
        return n

    def __call__(self, raw: Window, rng: np.random.Generator) -> TrainingExample:
        x0, doc = raw.tokens.long(), raw.doc_ids.long()
        real = doc >= 0
        t = sample_t(rng, self.eps)
        masked = torch.from_numpy(rng.random(len(x0)) < t) & real
        ids = torch.where(masked, torch.full_like(x0, self.tokenizer.mask_id), x0)
        labels = torch.where(masked, x0, torch.full_like(x0, IGNORE))
        weights = masked.float() / (t * max(int(real.sum()), 1))
        att = AttentionStructure(doc[None], torch.zeros(1, len(x0), dtype=torch.long),
                                 torch.zeros(1, len(x0), dtype=torch.bool), positions_from_segments(doc[None]))
        ex = TrainingExample.from_structure(ids, labels, weights, att, self.name)
        return shift_targets(ex) if self.shift else ex


@dataclass
class BlockDiffusion:
    """BD3-LM-style block diffusion with an optional AR loss on the clean half."""

    tokenizer: object
    block_size: int = 16
    clean_attention: CleanAttention = "causal"
    ar_weight: float = 0.0
    eps: float = 1e-3
    shift: bool = False
    name: str = "block_diffusion"

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.ar_weight > 0 and self.clean_attention != "causal":
            raise ValueError("ar_weight > 0 needs clean_attention='causal' (a block-causal clean half sees "
                             "the next token inside its own block)")

    def max_length(self, n: int) -> int:
        return 2 * n

    def __call__(self, raw: Window, rng: np.random.Generator) -> TrainingExample:
        x0, doc = raw.tokens.long(), raw.doc_ids.long()
        L = len(x0)
        real = doc >= 0
        segments, masks, ts = draw_block_noise([(0, L)], self.block_size, rng, self.eps)
        masks = [m & real[s:e] for (s, e), m in zip(segments, masks, strict=True)]
        ids, att, twins = noisy_copy_layout(x0, doc, segments, masks, self.tokenizer.mask_id,
                                            self.clean_attention, self.block_size)
        labels, weights = noisy_targets(x0, ids, twins, segments, masks, ts, max(int(real.sum()), 1))
        if self.ar_weight > 0:
            ar = next_token_labels(x0, continues(doc))
            labels[:L] = ar
            n_ar = max(int((ar != IGNORE).sum()), 1)
            weights[:L] = (ar != IGNORE).float() * (self.ar_weight / n_ar)
        ex = TrainingExample.from_structure(ids, labels, weights, att, self.name)
        return shift_targets(ex) if self.shift else ex
