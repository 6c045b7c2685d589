"""Chat template: a trajectory of turns -> token ids with every turn tagged context or action.

A turn is ``ROLE_MARKER content <|end|>``. Assistant turns are *actions* (what the agent
writes and what SFT scores) unless marked ``trainable=False``; system, user and tool turns are
*context*. The role marker of an
action belongs to the context (the prompt ends with ``<|assistant|>``), so an action span is
exactly its content tokens plus the closing ``<|end|>`` -- what a sampler generates.
This is the one format the multi-turn SFT objective, the agent runtime and the server share.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from unimask.tokenizer import special as sp
from unimask.tokenizer.tokenizer import Tokenizer

Role = Literal["system", "user", "assistant", "tool"]
ROLE_MARKERS: dict[str, str] = {"system": sp.SYSTEM, "user": sp.USER, "assistant": sp.ASSISTANT, "tool": sp.TOOL}


@dataclass
class Turn:
    """One turn. ``trainable=False`` keeps an assistant turn as context only: a logged mistake the
    trajectory recovers from is shown to the model but never taught."""

    role: Role
    content: str
    trainable: bool = True

    def __post_init__(self) -> None:
        if self.role not in ROLE_MARKERS:
            raise ValueError(f"unknown role {self.role!r}; expected one of {sorted(ROLE_MARKERS)}")

    @property
    def is_action(self) -> bool:
        return self.role == "assistant" and self.trainable

    def to_dict(self) -> dict[str, Any]:
        """The JSONL form: ``{"role", "content"}``, plus ``"trainable": false`` where it is false."""
        return {"role": self.role, "content": self.content, **({} if self.trainable else {"trainable": False})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        return cls(d["role"], d["content"], bool(d.get("trainable", True)))


@dataclass
class TurnSequence:
    """Token ids of a rendered trajectory with, per token, its turn index and action flag."""

    token_ids: list[int] = field(default_factory=list)
    turn_ids: list[int] = field(default_factory=list)
    is_action: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.token_ids)

    def extend(self, ids: Sequence[int], turn: int, action: bool) -> None:
        self.token_ids.extend(ids)
        self.turn_ids.extend([turn] * len(ids))
        self.is_action.extend([action] * len(ids))


def render_turns(turns: Sequence[Turn], tokenizer: Tokenizer, add_generation_prompt: bool = False) -> TurnSequence:
    """Render turns to ids. Turn index ``k`` covers turn k's marker, content and end token.

    The ids start with the tokenizer's own prompt prefix (Llama's and Mistral's BOS; nothing for
    unimask's, Qwen's or Dream's), as a generation prompt does (``Tokenizer.encode_prompt``), so a
    model is fine-tuned on the sequences it will be prompted with; it belongs to the first turn.
    """
    seq = TurnSequence()
    if turns and tokenizer.prompt_prefix_ids:
        seq.extend(tokenizer.prompt_prefix_ids, 0, False)
    for k, turn in enumerate(turns):
        marker = tokenizer.token_to_id(ROLE_MARKERS[turn.role])
        content = tokenizer.encode(turn.content) + [tokenizer.end_of_turn_id]
        if turn.is_action:
            seq.extend([marker], k, False)
            seq.extend(content, k, True)
        else:
            seq.extend([marker, *content], k, False)
    if add_generation_prompt:
        seq.extend([tokenizer.assistant_id], len(turns), False)
    return seq


def render_text(turns: Sequence[Turn], add_generation_prompt: bool = False) -> str:
    """The same rendering as a string (special tokens spelled out), for prompts and logs."""
    parts = [f"{ROLE_MARKERS[t.role]}{t.content}{sp.END_OF_TURN}" for t in turns]
    if add_generation_prompt:
        parts.append(sp.ASSISTANT)
    return "".join(parts)


_MARKER_ROLES = {v: k for k, v in ROLE_MARKERS.items()}


def parse_rendered(text: str) -> list[Turn]:
    """Inverse of ``render_text`` for complete turns (a trailing generation prompt is ignored)."""
    pattern = "(" + "|".join(re.escape(m) for m in ROLE_MARKERS.values()) + ")"
    parts = re.split(pattern, text)
    turns = []
    for i in range(1, len(parts) - 1, 2):
        body = parts[i + 1]
        if body.endswith(sp.END_OF_TURN):
            turns.append(Turn(_MARKER_ROLES[parts[i]], body[: -len(sp.END_OF_TURN)]))  # type: ignore[arg-type]
    return turns
