"""Span corruption (T5 sentinels, decoder-only) and CodeGen2 file-level infill.

Both cut spans out of each document of a packed window and move them behind the corrupted
document. A window that crosses document boundaries is split there, each piece corrupted on
its own, then re-joined (CodeGen2); each re-joined piece is its own attention document.

* ``span_corruption``: ``ctx_with_<mask_k> <sep> <mask_1> span_1 <mask_2> span_2 ... <|endoftext|>``
* ``codegen2_infill``: ``prefix <mask_1> suffix <|endoftext|> <sep> <mask_1> middle <eom>`` for N
  spans -- the released CodeGen2 format; a sampler writes the middle and stops at ``<eom>``.
The loss covers the target side (after ``<sep>``); ``score_context=True`` adds the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from unimask.model.attention import AttentionStructure, positions_from_segments
from unimask.objectives.base import Window, doc_pieces, normalised_weights, sample_span_mask
from unimask.objectives.contract import AR_DECODER, DecoderSpec, Reads
from unimask.objectives.example import IGNORE, TrainingExample
from unimask.tokenizer import Tokenizer
from unimask.tokenizer.formats import codegen2_targets
from unimask.tokenizer.special import NUM_SENTINELS


@dataclass
class _SpanObjective:
    """Shared machinery; subclasses define ``_format(ctx, spans) -> (ids, target_start)``."""

    tokenizer: Tokenizer
    mask_ratio: tuple[float, float] = (0.15, 0.15)  # per-sequence ratio ~ U(lo, hi)
    mean_span: float = 3.0
    max_spans: int = 16  # per window (one sentinel each)
    min_piece: int = 4  # shorter document pieces stay uncorrupted
    score_context: bool = False
    name: str = ""
    reads: ClassVar[Reads] = "window"

    def __post_init__(self) -> None:
        if self.max_spans > NUM_SENTINELS:  # every unimask tokenizer has exactly these sentinels
            raise ValueError(f"max_spans {self.max_spans} > {NUM_SENTINELS} sentinel tokens")
        lo, hi = self.mask_ratio
        if not 0 <= lo <= hi < 1:
            raise ValueError(f"mask_ratio must satisfy 0 <= lo <= hi < 1, got {self.mask_ratio}")

    def decoder(self) -> DecoderSpec:
        return AR_DECODER

    def max_length(self, n: int) -> int:
        return n + 5 * self.max_spans

    def __call__(self, raw: Window, rng: np.random.Generator) -> TrainingExample:
        tokens = raw.tokens.long().tolist()
        ratio = float(rng.uniform(*self.mask_ratio))
        out: list[int] = []
        seg: list[int] = []
        scored: list[bool] = []
        budget = self.max_spans
        pieces = doc_pieces(raw.doc_ids)
        for p, (s, e) in enumerate(pieces):
            piece = tokens[s:e]
            spans = []
            if e - s >= self.min_piece and budget > 0:
                spans = sample_span_mask(e - s, ratio, self.mean_span, rng, max_spans=budget)
            if not spans:
                out += piece
                seg += [p] * len(piece)
                scored += [True] * len(piece) if self.score_context else [False] * len(piece)
                continue
            budget -= len(spans)
            ctx: list[int] = []
            prev = 0
            for k, (a, b) in enumerate(spans):
                ctx += piece[prev:a] + [self.tokenizer.sentinel_ids[k]]
                prev = b
            ctx += piece[prev:]
            ids, t0 = self._format(ctx, [piece[a:b] for a, b in spans])
            out += ids
            seg += [p] * len(ids)
            scored += [self.score_context] * t0 + [True] * (len(ids) - t0)
        limit = self.max_length(len(tokens))
        out, seg, scored = out[:limit], seg[:limit], scored[:limit]
        ids = torch.tensor(out, dtype=torch.long)
        segt = torch.tensor(seg, dtype=torch.long)
        labels = torch.full_like(ids, IGNORE)
        same = segt[1:] == segt[:-1]
        want = torch.tensor(scored[1:], dtype=torch.bool) & same
        labels[:-1] = torch.where(want, ids[1:], labels[:-1])
        att = AttentionStructure(segt[None], torch.arange(len(ids))[None], torch.zeros(1, len(ids), dtype=torch.bool),
                                 positions_from_segments(segt[None]))
        return TrainingExample.from_structure(ids, labels, normalised_weights(labels), att, self.name)


@dataclass
class SpanCorruption(_SpanObjective):
    """T5-style span corruption in decoder-only form."""

    name: str = "span_corruption"

    def _format(self, ctx: list[int], spans: list[list[int]]) -> tuple[list[int], int]:
        tgt = [self.tokenizer.sep_id]
        for k, span in enumerate(spans):
            tgt += [self.tokenizer.sentinel_ids[k], *span]
        tgt.append(self.tokenizer.eos_id)
        # The target side starts after <sep>: predicting the first sentinel is scored.
        return ctx + tgt, len(ctx)


@dataclass
class CodeGen2Infill(_SpanObjective):
    """CodeGen2 file-level infill: mask ratio per sequence, then span lengths, then positions."""

    mask_ratio: tuple[float, float] = (0.05, 0.5)
    mean_span: float = 16.0
    max_spans: int = 4
    name: str = "codegen2_infill"

    def _format(self, ctx: list[int], spans: list[list[int]]) -> tuple[list[int], int]:
        return ctx + codegen2_targets(spans, self.tokenizer), len(ctx) + 1
