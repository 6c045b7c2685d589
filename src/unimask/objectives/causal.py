"""Causal LM and prefix-LM over packed windows (document-masked; positions restart per document)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from unimask.model.attention import AttentionStructure, positions_from_segments
from unimask.objectives.base import Window, continues, next_token_labels, normalised_weights
from unimask.objectives.contract import AR_DECODER, DecoderSpec, Reads
from unimask.objectives.example import IGNORE, TrainingExample


def _doc_structure(doc_ids: torch.Tensor, block_ids: torch.Tensor) -> AttentionStructure:
    doc = doc_ids[None].long()
    return AttentionStructure(doc, block_ids[None].long(), torch.zeros_like(doc, dtype=torch.bool),
                              positions_from_segments(doc))


@dataclass
class CausalLM:
    """Next-token prediction; no target crosses a document boundary."""

    name: str = "causal"
    reads: ClassVar[Reads] = "window"

    def decoder(self) -> DecoderSpec:
        return AR_DECODER

    def max_length(self, n: int) -> int:
        return n

    def __call__(self, raw: Window, rng: np.random.Generator) -> TrainingExample:
        tokens, doc = raw.tokens.long(), raw.doc_ids.long()
        labels = next_token_labels(tokens, continues(doc))
        att = _doc_structure(doc, torch.arange(len(tokens)))
        return TrainingExample.from_structure(tokens, labels, normalised_weights(labels), att, self.name)


@dataclass
class PrefixLM:
    """CodeGen2's prefix-LM ablation: a split point per sequence, bidirectional attention over the
    prefix, causal after it, loss only on the suffix."""

    min_prefix: int = 1
    name: str = "prefix_lm"
    reads: ClassVar[Reads] = "window"

    def decoder(self) -> DecoderSpec:
        return AR_DECODER

    def max_length(self, n: int) -> int:
        return n

    def __call__(self, raw: Window, rng: np.random.Generator) -> TrainingExample:
        tokens, doc = raw.tokens.long(), raw.doc_ids.long()
        L = len(tokens)
        split = int(rng.integers(min(self.min_prefix, L - 1), L))  # prefix = tokens[:split]
        pos = torch.arange(L)
        blocks = torch.clamp(pos - split + 1, min=0)
        labels = next_token_labels(tokens, continues(doc))
        labels[: max(split - 1, 0)] = IGNORE  # targets inside the prefix would be visible to it
        att = _doc_structure(doc, blocks)
        return TrainingExample.from_structure(tokens, labels, normalised_weights(labels), att, self.name)
