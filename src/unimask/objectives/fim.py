"""Fill-in-the-middle (Bavarian et al. 2022): PSM and SPM, context-level, character-level spans.

Context-level: applied to each document piece of an already-chunked window. With probability
``fim_rate`` a piece is split at two uniformly drawn *character* positions into
prefix/middle/suffix (re-tokenised) and rearranged:

* PSM: ``<fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle``
* SPM: ``<fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle`` (with prob. ``spm_rate``)

Every token is scored with next-token prediction, as in the paper; other pieces stay causal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from unimask.model.attention import AttentionStructure, positions_from_segments
from unimask.objectives.base import Window, doc_pieces, next_token_labels, normalised_weights
from unimask.objectives.contract import AR_DECODER, DecoderSpec, Reads
from unimask.objectives.example import TrainingExample
from unimask.tokenizer import Tokenizer
from unimask.tokenizer.formats import FIM_PSM, FIM_SPM


@dataclass
class FIM:
    tokenizer: Tokenizer
    fim_rate: float = 0.5
    spm_rate: float = 0.5
    max_fim_pieces: int = 2  # per window; bounds the length growth from re-tokenisation
    name: str = "fim"
    reads: ClassVar[Reads] = "window"

    def __post_init__(self) -> None:
        for k in ("fim_rate", "spm_rate"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {getattr(self, k)}")

    def decoder(self) -> DecoderSpec:
        return AR_DECODER

    def max_length(self, n: int) -> int:
        return n + 8 * self.max_fim_pieces

    def transform_piece(self, piece: list[int], rng: np.random.Generator) -> list[int]:
        tok = self.tokenizer
        text = tok.decode(piece)
        a, b = sorted(int(x) for x in rng.integers(0, len(text) + 1, size=2))
        pre, mid, suf = (tok.encode(t) for t in (text[:a], text[a:b], text[b:]))
        form = FIM_SPM if rng.random() < self.spm_rate else FIM_PSM
        return form.ids(pre, suf, tok) + mid

    def __call__(self, raw: Window, rng: np.random.Generator) -> TrainingExample:
        tokens = raw.tokens.long().tolist()
        out: list[int] = []
        seg: list[int] = []
        done = 0
        for p, (s, e) in enumerate(doc_pieces(raw.doc_ids)):
            piece = tokens[s:e]
            # Special tokens inside a piece (e.g. its EOS) would not survive decode->encode intact.
            has_special = any(t in self.tokenizer.special_ids for t in piece[:-1])
            if done < self.max_fim_pieces and not has_special and e - s >= 4 and rng.random() < self.fim_rate:
                tail = [piece[-1]] if piece[-1] in self.tokenizer.special_ids else []
                piece = self.transform_piece(piece[: len(piece) - len(tail)], rng) + tail
                done += 1
            out += piece
            seg += [p] * len(piece)
        limit = self.max_length(len(tokens))
        ids = torch.tensor(out[:limit], dtype=torch.long)
        segt = torch.tensor(seg[:limit], dtype=torch.long)
        same = torch.cat([torch.zeros(1, dtype=torch.bool), segt[1:] == segt[:-1]])
        labels = next_token_labels(ids, same)
        att = AttentionStructure(segt[None], torch.arange(len(ids))[None], torch.zeros(1, len(ids), dtype=torch.bool),
                                 positions_from_segments(segt[None]))
        return TrainingExample.from_structure(ids, labels, normalised_weights(labels), att, self.name)
