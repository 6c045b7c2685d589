"""The objective contract: what the trainer, the sampler loader and the experiments may ask of
an objective, and ``DecoderSpec``, the decoder a trained mixture implies.

An objective is a pure transform ``(raw, rng) -> TrainingExample`` that also says what it reads
(``reads``: packed ``"window"``s or agent ``"trajectory"``s), how long its examples can get
(``max_length``) and which decoder samples from a model trained on it (``decoder()``). The
trainer records ``mixture_decoder(objectives).to_extra()`` in every checkpoint's ``extra`` and
``unimask.sampling.load_backbone`` reads it back with ``DecoderSpec.from_extra``; no other
module matches objective names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from unimask.config import ConfigError
from unimask.objectives.example import TrainingExample

Reads = Literal["window", "trajectory"]
BackboneKind = Literal["ar", "block_diffusion", "masked_diffusion"]


@dataclass(frozen=True)
class DecoderSpec:
    """How to sample from a checkpoint. ``block_size`` and ``clean_attention`` concern
    ``block_diffusion`` only; ``shift`` (Dream-style shifted targets) diffusion only."""

    backbone: BackboneKind = "ar"
    block_size: int = 16
    clean_attention: str = "causal"
    shift: bool = False

    def to_extra(self) -> dict[str, Any]:
        """The checkpoint-metadata form: ``{"backbone": "ar"}``, ``{"backbone": "block_diffusion",
        "block_size": 8, "clean_attention": "causal"}``, ``{"backbone": "masked_diffusion"}``, plus
        ``"shift": true`` only when set (absent means unshifted, as in older checkpoints)."""
        out: dict[str, Any] = {"backbone": self.backbone}
        if self.backbone == "block_diffusion":
            out.update(block_size=int(self.block_size), clean_attention=str(self.clean_attention))
        if self.shift:
            out["shift"] = True
        return out

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> DecoderSpec:
        return cls(extra.get("backbone", "ar"), int(extra.get("block_size", 16)),
                   str(extra.get("clean_attention", "causal")), bool(extra.get("shift", False)))


AR_DECODER = DecoderSpec("ar")


@runtime_checkable
class Objective(Protocol):
    name: str
    reads: Reads

    def max_length(self, n: int) -> int:
        """The longest example built from an input of ``n`` tokens."""
        ...

    def decoder(self) -> DecoderSpec: ...

    def __call__(self, raw: Any, rng: np.random.Generator) -> TrainingExample: ...


def mixture_decoder(objectives: Sequence[Objective]) -> DecoderSpec:
    """The one decoder a mixture implies: AR when every objective is AR, otherwise the diffusion
    objectives' decoder (AR parts, e.g. a causal share, do not change it), which must agree."""
    diffusion = [o.decoder() for o in objectives if o.decoder().backbone != "ar"]
    if not diffusion:
        return AR_DECODER
    if len({d.backbone for d in diffusion}) > 1:
        raise ConfigError("mixing block_diffusion and masked_diffusion gives no single decoder; pick one")
    if len({d.shift for d in diffusion}) > 1:
        raise ConfigError("mixing shifted and unshifted diffusion objectives gives no single decoder; set the same "
                          "`shift` on every diffusion objective")
    return diffusion[0]


def max_input_length(objective: Objective, limit: int) -> int:
    """The longest input whose examples fit in ``limit`` tokens (``max_length`` is non-decreasing)."""
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if objective.max_length(mid) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo
