"""The ``Constraint`` protocol samplers decode under, and ``TextConstraint``, its text-grammar base.

A constraint keeps the generated text a prefix of some language (the agent's tool calls:
``unimask.agent.constraint.ToolCallConstraint``). Samplers hold one opaque parser state per row,
starting at ``start()``, and ask the constraint for tokens: ``best_valid`` (greedy AR),
``mask_logits`` (sampled AR), ``commit_run`` (a diffusion step), ``forced_ids`` (tokens the grammar
leaves no choice about, written without a forward pass). They depend on this protocol only.

``TextConstraint`` derives those token-level operations from a character-level grammar: a
subclass supplies ``start``, ``feed`` (the state after some text, or None once the text can no
longer be completed), ``is_complete`` and ``forced`` (the text every completion starts with).

AR decoding masks every candidate token that would break the prefix (checked over the top
candidates by logit). Diffusion decoding commits, within a block, only a left-contiguous run of
positions whose tokens keep the prefix valid -- so no committed position ever violates it --
while still committing several tokens per step when they are confident.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Constraint(Protocol):
    """What a sampler needs from a constraint; states are opaque (None: no valid completion)."""

    def start(self) -> Any:
        """The state of the empty output."""

    def advance(self, state: Any, token_id: int, tokenizer: Any) -> Any:
        """The state after ``token_id`` (None once no valid completion is left)."""

    def is_complete(self, state: Any) -> bool:
        """True once the output is a whole sentence of the language."""

    def forced_ids(self, state: Any, tokenizer: Any) -> tuple[list[int], Any]:
        """The tokens the grammar leaves no choice about, and the state after them."""

    def best_valid(self, state: Any, logits: Tensor, tokenizer: Any, candidates: list[int] | None = None) -> int:
        """The highest-logit token that keeps the output valid (greedy AR)."""

    def mask_logits(self, logits: Tensor, states: Sequence[Any], tokenizer: Any) -> Tensor:
        """``logits`` with every token that would break its row's output set to -inf (sampled AR)."""

    def commit_run(self, state: Any, masked: list[bool], start: int, logits: Tensor, tokenizer: Any,
                   threshold: float | None, mask_id: int) -> tuple[list[tuple[int, int]], Any]:
        """The (position, token) run a diffusion step commits from ``start``, and the state after it."""


class TextConstraint(ABC):
    """A ``Constraint`` from a character-level grammar (``start``, ``feed``, ``is_complete``, ``forced``).

    ``candidates``: how many top tokens by logit are checked before a full-vocabulary scan.
    """

    def __init__(self, candidates: int = 64):
        self.candidates = candidates
        self._pieces: dict[int, dict[int, str]] = {}  # id(tokenizer) -> token id -> text

    # ------------------------------------------------------------------ the grammar (subclasses)
    @abstractmethod
    def start(self) -> Any:
        """The grammar's state before any text."""

    @abstractmethod
    def feed(self, state: Any, text: str) -> Any:
        """The state after ``text`` (None once no valid completion is left)."""

    @abstractmethod
    def is_complete(self, state: Any) -> bool:
        """True once the text fed so far is a whole sentence of the grammar."""

    def forced(self, state: Any) -> str:
        """The text the grammar admits as the only continuation from ``state`` ("" if none)."""
        return ""

    # ------------------------------------------------------------------ tokens
    def piece(self, token_id: int, tokenizer: Any) -> str:
        """The text of one token (decoded once per tokenizer)."""
        cache = self._pieces.setdefault(id(tokenizer), {})
        text = cache.get(token_id)
        if text is None:
            text = cache[token_id] = tokenizer.decode([token_id])
        return text

    def advance(self, state: Any, token_id: int, tokenizer: Any) -> Any:
        return self.feed(state, self.piece(token_id, tokenizer))


    def forced_ids(self, state: Any, tokenizer: Any) -> tuple[list[int], Any]:
        """The tokens of ``forced(state)`` and the state after them."""
        text = self.forced(state)
        if not text:
            return [], state
        ids: list[int] = []
        for t in tokenizer.encode(text):
            nxt = self.advance(state, t, tokenizer)
            if nxt is None:  # a tokenisation that does not round-trip: write only what is safe
                break
            ids.append(t)
            state = nxt
        return ids, state

    # ------------------------------------------------------------------ AR interface
    def best_valid(self, state: Any, logits: Tensor, tokenizer: Any,
                   candidates: list[int] | None = None) -> int:
        """The highest-scoring token that keeps ``state`` valid (greedy, without a full mask).

        Walks the candidates best-first (``candidates``: the row's precomputed top-k ids) and stops
        at the first valid one: on a trained model that is usually the argmax, so one check.
        """
        if self.is_complete(state):
            return tokenizer.end_of_turn_id
        if state is not None:
            if candidates is None:
                candidates = torch.topk(logits, min(self.candidates, logits.shape[-1])).indices.tolist()
            for t in candidates:
                if self.advance(state, t, tokenizer) is not None:
                    return t
        return int(self.mask_logits(logits[None], [state], tokenizer)[0].argmax())

    def mask_logits(self, logits: Tensor, states: Sequence[Any], tokenizer: Any) -> Tensor:
        """Keep, per row, only the top candidates that keep the text a valid prefix."""
        out = torch.full_like(logits, float("-inf"))
        k = min(self.candidates, logits.shape[-1])
        top = torch.topk(logits, k, dim=-1).indices.tolist()
        for b, state in enumerate(states):
            if self.is_complete(state):
                out[b, tokenizer.end_of_turn_id] = 0.0
                continue
            kept = [t for t in top[b] if self.advance(state, t, tokenizer) is not None]
            if not kept:  # nothing among the candidates: fall back to the full vocabulary scan
                kept = next(([t] for t in range(logits.shape[-1]) if self.advance(state, t, tokenizer) is not None), [])
            if kept:
                out[b, kept] = logits[b, kept]
            else:
                out[b, tokenizer.end_of_turn_id] = 0.0
        return out

    # ------------------------------------------------------------------ diffusion interface
    def commit_run(self, state: Any, masked: list[bool], start: int, logits: Tensor, tokenizer: Any,
                   threshold: float | None, mask_id: int) -> tuple[list[tuple[int, int]], Any]:
        """(position, token) commits for a diffusion step, and the state after them.

        ``state`` is the action up to block position ``start`` (the first masked one). That
        position always gets its best valid token; the following masked positions join the run
        while their best valid token is confident (> ``threshold``). One top-k and one softmax
        serve every position of the block.
        """
        rows = logits[start:]
        probs = rows.float().softmax(-1)
        peak = probs.max(-1).values.tolist()
        ranked = rows.clone()
        ranked[:, mask_id] = float("-inf")
        top = torch.topk(ranked, min(self.candidates, ranked.shape[-1]), dim=-1).indices.tolist()
        commits: list[tuple[int, int]] = []
        for j in range(len(top)):
            pos = start + j
            if not masked[pos]:
                break
            if self.is_complete(state):
                tok_id, conf = tokenizer.end_of_turn_id, 1.0
            else:
                if commits and (threshold is None or peak[j] <= threshold):
                    break  # its best valid token cannot be more confident than the row's best: no search
                tok_id = self.best_valid(state, ranked[j], tokenizer, top[j])
                conf = float(probs[j, tok_id])
            if commits and (threshold is None or conf <= threshold):
                break
            commits.append((pos, tok_id))
            if not self.is_complete(state):
                state = self.advance(state, tok_id, tokenizer)
        return commits, state
