"""Every training objective as a pure transform ``raw example -> TrainingExample``.

``build_objective(name, tokenizer, **params)`` is the registry the trainer and the CLI use; each
objective it builds follows ``contract.Objective`` (what it reads, its ``max_length``, the decoder
it implies). Objectives that read packed windows: causal, prefix_lm, span_corruption,
codegen2_infill, codegen2 (CodeGen2's final 50/50 causal|infill recipe), fim, copy,
masked_diffusion, block_diffusion, copy_diffusion. Objectives that read agent trajectories:
agent_sft_ar, agent_sft_diffusion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unimask.objectives.agent_sft import AgentSFTAR, AgentSFTDiffusion
from unimask.objectives.causal import CausalLM, PrefixLM
from unimask.objectives.contract import (
    AR_DECODER,
    DecoderSpec,
    Objective,
    Reads,
    max_input_length,
    mixture_decoder,
)
from unimask.objectives.copy import CopySpans, CopySpansDiffusion
from unimask.objectives.diffusion import BlockDiffusion, MaskedDiffusion
from unimask.objectives.example import IGNORE, Batch, TrainingExample, collate, example_loss
from unimask.objectives.fim import FIM
from unimask.objectives.spans import CodeGen2Infill, SpanCorruption


@dataclass
class Choice:
    """Pick one of several objectives per sequence (e.g. CodeGen2's 50/50 causal|infill)."""

    options: list[Objective]
    weights: list[float]
    name: str = "mixture"
    _p: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=float)
        if len(w) != len(self.options) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixture weights {self.weights} must be non-negative, one per objective, not all 0")
        self._p = w / w.sum()

    @property
    def reads(self) -> Reads:
        (reads,) = {o.reads for o in self.options}
        return reads

    def decoder(self) -> DecoderSpec:
        return mixture_decoder(self.options)

    def max_length(self, n: int) -> int:
        return max(o.max_length(n) for o in self.options)

    def __call__(self, raw: Any, rng: np.random.Generator) -> TrainingExample:
        return self.options[int(rng.choice(len(self.options), p=self._p))](raw, rng)


def _codegen2(tokenizer: Any, infill_rate: float = 0.5, **infill: Any) -> Choice:
    return Choice([CausalLM(), CodeGen2Infill(tokenizer, **infill)], [1 - infill_rate, infill_rate], "codegen2")


_REGISTRY: dict[str, Callable[..., Objective]] = {
    "causal": lambda tok, **p: CausalLM(**p),
    "prefix_lm": lambda tok, **p: PrefixLM(**p),
    "span_corruption": lambda tok, **p: SpanCorruption(tok, **p),
    "codegen2_infill": lambda tok, **p: CodeGen2Infill(tok, **p),
    "codegen2": _codegen2,
    "fim": lambda tok, **p: FIM(tok, **p),
    "copy": lambda tok, **p: CopySpans(tok, **p),
    "copy_diffusion": lambda tok, **p: CopySpansDiffusion(tok, **p),
    "masked_diffusion": lambda tok, **p: MaskedDiffusion(tok, **p),
    "block_diffusion": lambda tok, **p: BlockDiffusion(tok, **p),
    "agent_sft_ar": lambda tok, **p: AgentSFTAR(**p),
    "agent_sft_diffusion": lambda tok, **p: AgentSFTDiffusion(tok, **p),
}

def objective_names() -> list[str]:
    return sorted(_REGISTRY)


def build_objective(name: str, tokenizer: Any, **params: Any) -> Objective:
    """Instantiate a registered objective; unknown names or params are clear errors."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; choose one of {objective_names()}")
    for k in ("mask_ratio",):
        if k in params and isinstance(params[k], list):
            params[k] = tuple(params[k])
    try:
        return _REGISTRY[name](tokenizer, **params)
    except TypeError as e:
        raise ValueError(f"bad parameters for objective {name!r}: {e}") from e


__all__ = [
    "AR_DECODER", "IGNORE", "Batch", "Choice", "DecoderSpec", "Objective", "TrainingExample", "collate",
    "example_loss", "build_objective", "max_input_length", "mixture_decoder", "objective_names", "CausalLM", "PrefixLM", "SpanCorruption", "CodeGen2Infill",
    "FIM", "CopySpans", "CopySpansDiffusion", "MaskedDiffusion", "BlockDiffusion", "AgentSFTAR", "AgentSFTDiffusion",
]
