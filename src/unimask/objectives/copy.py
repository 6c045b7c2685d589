"""Copy warm-up: synthetic "repeat what the context said" examples, for either backbone.

Every agent action copies from its context (a name from the question into a query, an id from a
search hit into ``open``, a value from a signature into ``answer``), and copying needs induction
heads. On natural text those form late in pre-training -- far beyond what a small model gets in a
few CPU minutes -- while on repeats of random tokens they form in about a hundred steps. So a
short warm-up on ``x <sep> x`` (``x`` = ``span`` random regular tokens; the raw window's content
is not used) gives both backbones the circuit before pre-training.

The example is a two-turn ``TurnSequence`` -- context ``x <sep>``, action ``x`` -- scored by the agent
SFT objectives themselves: ``copy_warmup_ar`` predicts the repeat causally; ``copy_warmup_diffusion``
denoises it in blocks that see the clean first copy (the aligned, context-causal layout its
sampler decodes with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from unimask.objectives.agent_sft import AgentSFTAR, AgentSFTDiffusion
from unimask.objectives.example import TrainingExample
from unimask.tokenizer.chat import TurnSequence


@dataclass
class CopyWarmup:
    tokenizer: Any
    inner: AgentSFTAR | AgentSFTDiffusion
    span: int = 24
    name: str = "copy_warmup"

    def __post_init__(self) -> None:
        if self.span < 2:
            raise ValueError(f"copy warm-up span must be >= 2 tokens, got {self.span}")
        special = self.tokenizer.special_ids
        self._regular = np.array([i for i in range(self.tokenizer.vocab_size) if i not in special])

    @property
    def block_size(self) -> int | None:
        return getattr(self.inner, "block_size", None)

    def max_length(self, n: int) -> int:
        return self.inner.max_length(2 * self.span + 1)

    def __call__(self, raw: Any, rng: np.random.Generator) -> TrainingExample:
        x = rng.choice(self._regular, self.span).tolist()
        n = self.span + 1  # the separator cues where the copy starts, as a turn marker does
        seq = TurnSequence(x + [self.tokenizer.sep_id] + x, [0] * n + [1] * self.span,
                           [False] * n + [True] * self.span)
        ex = self.inner(seq, rng)
        ex.objective = self.name
        return ex


def copy_warmup_ar(tokenizer: Any, span: int = 24) -> CopyWarmup:
    return CopyWarmup(tokenizer, AgentSFTAR(), span, "copy_warmup_ar")


def copy_warmup_diffusion(tokenizer: Any, span: int = 24, block_size: int = 16) -> CopyWarmup:
    return CopyWarmup(tokenizer, AgentSFTDiffusion(tokenizer, block_size, pad_final_block=False), span,
                      "copy_warmup_diffusion")
