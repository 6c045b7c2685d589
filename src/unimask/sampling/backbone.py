"""The one small interface through which evals, the agent runtime and the server see a model.

AR models, diffusion models, ``transformers`` models loaded from a local directory and
scripted oracle policies all implement ``Backbone.generate``; nothing downstream branches on
backbone type. ``Generation`` records what came out and what it cost (NFE, wall time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from unimask.sampling.constraint import Constraint
from unimask.tokenizer import Tokenizer

StopReason = Literal["eos", "stop", "length", "constraint", "error"]


@dataclass
class Generation:
    """One completion: text (stop string excluded), ids, cost, and why it ended."""

    text: str
    token_ids: list[int]
    nfe: int  # forward passes spent on this prompt (a batched pass counts once per prompt in it)
    wall_time: float  # seconds
    stop_reason: StopReason
    info: dict[str, Any] = field(default_factory=dict)  # sampler-specific extras (e.g. tokens per step)


@runtime_checkable
class Backbone(Protocol):
    """What the agent loop, the evals and the server need from any model."""

    tokenizer: Tokenizer
    # the checkpoint's ``DecoderSpec.backbone`` ("ar", "block_diffusion", "masked_diffusion"), or
    # "hf" (a transformers model) and "scripted" (a policy function), which no checkpoint describes
    kind: str

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        stop: Sequence[str] | None = None,
        constraint: Constraint | None = None,
        **decoding: Any,
    ) -> list[Generation]:
        """``decoding``: ``DecodingOptions`` names; any other name is an ``UnknownOptionError``."""
        ...
