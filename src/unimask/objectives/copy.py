"""Copying as a pre-training signal: real corpus spans repeated at drawn offsets.

A packed window ``w`` of length L becomes ``w[:p] + w[s:s+n] + w[p:L-n]``: a span of ``n`` tokens
(drawn in ``[min_span, max_span]``) starting at a drawn source ``s`` is repeated at a drawn landing
point ``p >= s + n``, so the gap between the two occurrences, the span length and where the repeat
lands all vary and no positional shortcut predicts the copy. The whole window is one causal
stream (document boundaries are kept for the LM targets only), so the repeat can always see its
source.

* ``copy``: next-token loss on the repeat's tokens 2..n (the first one cannot be known), with a
  share ``lm_weight`` of the example's loss on LM targets elsewhere (weights sum to 1, as every
  shifted objective's do).
* ``copy_diffusion``: the same sequence in the context-causal block-diffusion layout. The repeat's
  first ``anchor`` tokens stay clean (they say *what* to copy, as a name's context does in a tool
  call); the rest is cut into blocks of ``block_size`` starting there, each noised with its own
  t, and the masked tokens are scored. This is AR-to-diffusion copying in the diffusion paradigm:
  inside a block a masked token's predecessor is often masked too, so an AR induction head alone
  does not carry over.

``CopyLayout`` is the one owner of the sequence layout; the induction metric
(``unimask.evals.induction``) builds its held-out probes with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from unimask.model.attention import AttentionStructure
from unimask.objectives.base import Window, continues, next_token_labels, normalised_weights
from unimask.objectives.diffusion import draw_block_noise, noisy_copy_layout, noisy_targets, shift_targets
from unimask.objectives.example import IGNORE, TrainingExample


@dataclass(frozen=True)
class CopyLayout:
    """One repeated span: the sequence and where the source and the repeat sit in it."""

    tokens: Tensor  # long [L]
    segments: Tensor  # long [L]: the original document of each token (for LM targets)
    source: int  # start of the first occurrence
    start: int  # start of the repeat
    length: int  # n

    @property
    def repeat(self) -> slice:
        return slice(self.start, self.start + self.length)


def draw_copy(tokens: Tensor, doc_ids: Tensor, rng: np.random.Generator, min_span: int, max_span: int) -> CopyLayout:
    """Repeat one span of ``tokens`` at a drawn landing point (see the module docstring)."""
    tokens, doc = tokens.long(), doc_ids.long()
    real = int((doc >= 0).sum())  # packed windows are padded at the end only
    hi = min(max_span, (real - 1) // 2)
    if hi < min_span:
        raise ValueError(f"a window of {real} real tokens cannot hold a repeated span of >= {min_span} tokens; "
                         "raise data.seq_len or lower min_span")
    n = int(rng.integers(min_span, hi + 1))
    s = int(rng.integers(0, real - 2 * n + 1))
    p = int(rng.integers(s + n, real - n + 1))
    out = torch.cat([tokens[:p], tokens[s : s + n], tokens[p : len(tokens) - n]])
    seg = torch.cat([doc[:p], torch.full((n,), int(doc[p - 1])), doc[p : len(tokens) - n]])
    return CopyLayout(out, seg, s, p, n)


def _check_spans(min_span: int, max_span: int, repeats: int) -> None:
    if not 2 <= min_span <= max_span:
        raise ValueError(f"copy spans need 2 <= min_span <= max_span, got {min_span}, {max_span}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")


def draw_copies(raw: Window, rng: np.random.Generator, min_span: int, max_span: int,
                repeats: int) -> tuple[Tensor, Tensor, list[slice]]:
    """The window cut into ``repeats`` equal chunks, one repeated span in each (denser copy signal).

    Returns the tokens, their original documents and the slice of every repeat.
    """
    tokens, doc = raw.tokens.long(), raw.doc_ids.long()
    bounds = np.linspace(0, len(tokens), repeats + 1).astype(int)
    parts, segs, spans = [], [], []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if int((doc[lo:hi] >= 0).sum()) < 2 * min_span + 1:  # padding at the end of a short window
            parts.append(tokens[lo:hi])
            segs.append(doc[lo:hi])
            continue
        lay = draw_copy(tokens[lo:hi], doc[lo:hi], rng, min_span, max_span)
        spans.append(slice(int(lo) + lay.start, int(lo) + lay.start + lay.length))
        parts.append(lay.tokens)
        segs.append(lay.segments)
    if not spans:
        raise ValueError(f"a window of {int((doc >= 0).sum())} real tokens cannot hold a repeated span of "
                         f">= {min_span} tokens; raise data.seq_len or lower min_span/repeats")
    return torch.cat(parts), torch.cat(segs), spans


@dataclass
class CopySpans:
    """Next-token prediction of a repeated corpus span (AR paradigm)."""

    min_span: int = 8
    max_span: int = 32
    repeats: int = 1
    lm_weight: float = 0.5
    name: str = "copy"

    def __post_init__(self) -> None:
        _check_spans(self.min_span, self.max_span, self.repeats)
        if not 0 <= self.lm_weight < 1:
            raise ValueError(f"lm_weight is the LM share of the loss, in [0, 1); got {self.lm_weight}")

    def max_length(self, n: int) -> int:
        return n

    def __call__(self, raw: Window, rng: np.random.Generator) -> TrainingExample:
        tokens, segments, spans = draw_copies(raw, rng, self.min_span, self.max_span, self.repeats)
        lm = next_token_labels(tokens, continues(segments))
        copy = torch.full_like(lm, IGNORE)
        for r in spans:
            copy[r.start : r.stop - 1] = tokens[r.start + 1 : r.stop]  # targets: repeat tokens 2..n
            lm[r.start - 1 : r.stop - 1] = IGNORE  # the repeat's first token is noise for the LM
        weights = normalised_weights(copy, 1.0 - self.lm_weight)
        labels = copy
        if self.lm_weight > 0:
            weights = weights + normalised_weights(lm, self.lm_weight)
            labels = torch.where(copy != IGNORE, copy, lm)
        att = AttentionStructure.causal(1, len(tokens))
        return TrainingExample.from_structure(tokens, labels, weights, att, self.name)


@dataclass
class CopySpansDiffusion:
    """The repeat noised block by block behind a clean anchor (context-causal block diffusion)."""

    tokenizer: object
    block_size: int = 8
    min_span: int = 8
    max_span: int = 32
    repeats: int = 1
    anchor: int = 1
    ar_weight: float = 0.5
    eps: float = 1e-3
    shift: bool = False
    name: str = "copy_diffusion"

    def __post_init__(self) -> None:
        _check_spans(self.min_span, self.max_span, self.repeats)
        if not 0 <= self.anchor < self.min_span:
            raise ValueError(f"anchor must be in [0, min_span), got {self.anchor}")

    @property
    def clean_attention(self) -> str:
        return "causal"

    def max_length(self, n: int) -> int:
        return n + self.repeats * self.max_span

    def __call__(self, raw: Window, rng: np.random.Generator) -> TrainingExample:
        x0, seg, spans = draw_copies(raw, rng, self.min_span, self.max_span, self.repeats)
        L = len(x0)
        ranges = [(r.start + self.anchor, r.stop) for r in spans]
        segments, masks, ts = draw_block_noise(ranges, self.block_size, rng, self.eps)
        ids, att, twins = noisy_copy_layout(x0, torch.zeros(L, dtype=torch.long), segments, masks,
                                            self.tokenizer.mask_id, "causal")
        labels, weights = noisy_targets(x0, ids, twins, segments, masks, ts, sum(e - s for s, e in ranges))
        if self.ar_weight > 0:
            ar = next_token_labels(x0, continues(seg))
            labels[:L] = ar
            weights[:L] = normalised_weights(ar, self.ar_weight)
        ex = TrainingExample.from_structure(ids, labels, weights, att, self.name)
        return shift_targets(ex) if self.shift else ex
