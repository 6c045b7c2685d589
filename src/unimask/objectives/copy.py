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
* ``marked`` (a share of the repeats, both objectives): the source is written between backticks
  and the repeat between double quotes, ``... `span` ... "span" ...``, as a name sits in a DocQA
  question and in the tool call that copies it. The opening quote says *where* the copy starts,
  so the repeat's first token and its closing quote are scored too: the skill a tool call needs
  first (find the quoted name), which plain repeats never teach (measured: an SFT'd agent on a
  base without it copied later name tokens at 77% but the first at 5%).
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
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor

from unimask.model.attention import AttentionStructure
from unimask.objectives.base import Window, continues, next_token_labels, normalised_weights
from unimask.objectives.contract import AR_DECODER, DecoderSpec, Reads
from unimask.objectives.diffusion import draw_block_noise, noisy_copy_layout, noisy_targets, shift_targets
from unimask.objectives.example import IGNORE, TrainingExample


class Repeat(NamedTuple):
    """Where one repeat sits in a copy example: ``[start, end)`` holds it (and its closing marker)."""

    start: int
    end: int
    marked: bool

    @property
    def first_known(self) -> int:
        """The first token of the repeat that its context determines (the first one only if marked)."""
        return self.start if self.marked else self.start + 1

    def shifted(self, offset: int) -> Repeat:
        return Repeat(self.start + offset, self.end + offset, self.marked)


@dataclass(frozen=True)
class CopyLayout:
    """One repeated span: the sequence and where the source and the repeat sit in it."""

    tokens: Tensor  # long [L]
    segments: Tensor  # long [L]: the original document of each token (for LM targets)
    source: int  # start of the first occurrence
    start: int  # start of the repeat
    length: int  # n
    inserted: Tensor  # bool [L]: tokens the layout wrote in (the repeat, and markers if marked)
    end: int  # end of the scored run (the repeat and, if marked, its closing marker)
    marked: bool  # the source and repeat are quoted: the first token is known

    @property
    def repeat(self) -> slice:
        return slice(self.start, self.start + self.length)

    @property
    def run(self) -> Repeat:
        return Repeat(self.start, self.end, self.marked)

    @property
    def first_known(self) -> int:
        return self.run.first_known


@dataclass(frozen=True)
class Marks:
    """Token ids written around a marked source (``open``/``close``) and its repeat (``cue``/``end``)."""

    open: list[int]
    close: list[int]
    cue: list[int]
    end: list[int]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, source: tuple[str, str] = ("`", "`"),
                       repeat: tuple[str, str] = (' "', '"')) -> Marks:
        ids = [tokenizer.encode(t) for t in (*source, *repeat)]
        if not all(ids):
            raise ValueError(f"copy markers {source + repeat} must each encode to at least one token")
        return cls(*ids)

    def __len__(self) -> int:
        return len(self.open) + len(self.close) + len(self.cue) + len(self.end)


def draw_copy(tokens: Tensor, doc_ids: Tensor, rng: np.random.Generator, min_span: int, max_span: int,
              marks: Marks | None = None) -> CopyLayout:
    """Repeat one span of ``tokens`` at a drawn landing point (see the module docstring); with
    ``marks``, the source and the repeat are quoted. The result keeps the window's length."""
    tokens, doc = tokens.long(), doc_ids.long()
    L, extra = len(tokens), len(marks) if marks is not None else 0
    real = int((doc >= 0).sum())  # packed windows are padded at the end only
    hi = min(max_span, (real - 1 - extra) // 2)
    if hi < min_span:
        raise ValueError(f"a window of {real} real tokens cannot hold a repeated span of >= {min_span} tokens; "
                         "raise data.seq_len or lower min_span")
    n = int(rng.integers(min_span, hi + 1))
    s = int(rng.integers(0, real - 2 * n - extra + 1))
    p = int(rng.integers(s + n, real - n - extra + 1))
    span = tokens[s : s + n]
    if marks is None:
        pieces = [(tokens[:p], False), (span, True), (tokens[p:], False)]
    else:
        m = lambda ids: (torch.tensor(ids, dtype=torch.long), True)  # noqa: E731
        pieces = [(tokens[:s], False), m(marks.open), (span, False), m(marks.close), (tokens[s + n : p], False),
                  m(marks.cue), (span, True), m(marks.end), (tokens[p:], False)]
    out = torch.cat([t for t, _ in pieces])[:L]
    inserted = torch.cat([torch.full((len(t),), ins) for t, ins in pieces])[:L]
    # an inserted token belongs to the document of the window token before it (at 0: the one after)
    seg = doc[(torch.cumsum(~inserted, 0) - 1).clamp_min(0)]
    if marks is None:
        return CopyLayout(out, seg, s, p, n, inserted, p + n, False)
    start = p + len(marks.open) + len(marks.close) + len(marks.cue)
    return CopyLayout(out, seg, s + len(marks.open), start, n, inserted, start + n + len(marks.end), True)


def _check_spans(min_span: int, max_span: int, repeats: int) -> None:
    if not 2 <= min_span <= max_span:
        raise ValueError(f"copy spans need 2 <= min_span <= max_span, got {min_span}, {max_span}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")


def draw_copies(raw: Window, rng: np.random.Generator, min_span: int, max_span: int, repeats: int,
                marks: Marks | None = None, marked: float = 0.0) -> tuple[Tensor, Tensor, Tensor, list[Repeat]]:
    """The window cut into ``repeats`` equal chunks, one repeated span in each (denser copy signal),
    a share ``marked`` of them quoted with ``marks``.

    Returns the tokens, their original documents, which tokens were written in, and every repeat.
    """
    if marked > 0 and marks is None:
        raise ValueError("marked copies need marks (Marks.from_tokenizer)")
    tokens, doc = raw.tokens.long(), raw.doc_ids.long()
    bounds = np.linspace(0, len(tokens), repeats + 1).astype(int)
    parts, segs, ins, reps = [], [], [], []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if int((doc[lo:hi] >= 0).sum()) < 2 * min_span + 1 + (len(marks) if marked > 0 else 0):
            parts.append(tokens[lo:hi])  # padding at the end of a short window
            segs.append(doc[lo:hi])
            ins.append(torch.zeros(hi - lo, dtype=torch.bool))
            continue
        quote = marked > 0 and bool(rng.random() < marked)  # no draw at 0: unmarked runs stay as they were
        lay = draw_copy(tokens[lo:hi], doc[lo:hi], rng, min_span, max_span, marks if quote else None)
        reps.append(lay.run.shifted(int(lo)))
        parts.append(lay.tokens)
        segs.append(lay.segments)
        ins.append(lay.inserted)
    if not reps:
        raise ValueError(f"a window of {int((doc >= 0).sum())} real tokens cannot hold a repeated span of "
                         f">= {min_span} tokens; raise data.seq_len or lower min_span/repeats")
    return torch.cat(parts), torch.cat(segs), torch.cat(ins), reps


def _marks(tokenizer: Any, marked: float) -> Marks | None:
    if not 0 <= marked <= 1:
        raise ValueError(f"marked is the share of quoted repeats, in [0, 1]; got {marked}")
    if marked == 0:
        return None
    if tokenizer is None:
        raise ValueError("marked copies need the tokenizer (their markers are its tokens)")
    return Marks.from_tokenizer(tokenizer)


@dataclass
class CopySpans:
    """Next-token prediction of a repeated corpus span (AR paradigm)."""

    tokenizer: Any = None  # needed only for marked repeats
    min_span: int = 8
    max_span: int = 32
    repeats: int = 1
    lm_weight: float = 0.5
    marked: float = 0.0
    name: str = "copy"
    reads: ClassVar[Reads] = "window"

    def __post_init__(self) -> None:
        _check_spans(self.min_span, self.max_span, self.repeats)
        self.marks = _marks(self.tokenizer, self.marked)
        if not 0 <= self.lm_weight < 1:
            raise ValueError(f"lm_weight is the LM share of the loss, in [0, 1); got {self.lm_weight}")

    def decoder(self) -> DecoderSpec:
        return AR_DECODER

    def max_length(self, n: int) -> int:
        return n

    def __call__(self, raw: Window, rng: np.random.Generator) -> TrainingExample:
        tokens, segments, inserted, reps = draw_copies(raw, rng, self.min_span, self.max_span, self.repeats,
                                                       self.marks, self.marked)
        lm = next_token_labels(tokens, continues(segments))
        lm[:-1][inserted[1:]] = IGNORE  # what the layout wrote in is noise for the LM
        copy = torch.full_like(lm, IGNORE)
        for r in reps:  # targets: the repeat's tokens 2..n, or all of them and the closing mark if marked
            copy[r.first_known - 1 : r.end - 1] = tokens[r.first_known : r.end]
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
    anchor: int = 1  # clean leading tokens of an unmarked repeat (a marked one starts at its cue)
    ar_weight: float = 0.5
    marked: float = 0.0
    eps: float = 1e-3
    shift: bool = False
    name: str = "copy_diffusion"
    reads: ClassVar[Reads] = "window"

    def __post_init__(self) -> None:
        _check_spans(self.min_span, self.max_span, self.repeats)
        self.marks = _marks(self.tokenizer, self.marked)
        if not 0 <= self.anchor < self.min_span:
            raise ValueError(f"anchor must be in [0, min_span), got {self.anchor}")

    @property
    def clean_attention(self) -> str:
        return "causal"

    def decoder(self) -> DecoderSpec:
        return DecoderSpec("block_diffusion", self.block_size, self.clean_attention, self.shift)

    def max_length(self, n: int) -> int:
        return n + self.repeats * (self.max_span + (len(self.marks.end) if self.marks else 0))

    def __call__(self, raw: Window, rng: np.random.Generator) -> TrainingExample:
        x0, seg, _, reps = draw_copies(raw, rng, self.min_span, self.max_span, self.repeats, self.marks, self.marked)
        L = len(x0)
        ranges = [(r.start if r.marked else r.start + self.anchor, r.end) for r in reps]
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
