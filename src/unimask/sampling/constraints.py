"""Constrained tool calls: the action text stays a prefix of a schema-valid tool call.

``ToolCallConstraint`` is built from the JSON schema of the tool-call envelope
(``unimask.agent.protocol.tool_call_schema``: a ``oneOf`` of ``{"name": {"const": ...},
"arguments": {...}}``). It accepts an optional ``<think>...</think>`` and then exactly
``<tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>`` in ``json.dumps``'s canonical
spacing. Supported argument schema subset: an object with ``properties`` whose types are
``string`` (optionally ``enum``), ``integer`` or ``number`` (optionally ``minimum``/``maximum``)
or ``boolean``, ``required`` keys, and no other keys (``additionalProperties: false`` is assumed).

AR decoding masks every candidate token that would break the prefix (checked over the top
candidates by logit). Diffusion decoding commits, within a block, only a left-contiguous run of
positions whose tokens keep the prefix valid -- so no committed position ever violates it --
while still committing several tokens per step when they are confident.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from unimask.tokenizer import special as sp

_INT = re.compile(r"-?(0|[1-9]\d*)?")
_NUM = re.compile(r"-?(\d+(\.\d*)?)?")
# special tokens never belong inside an argument string (they would also break parsing)
_SPECIAL_IN_STRINGS = ("<|", "<mask_", sp.TOOL_CALL_START, sp.TOOL_CALL_END, sp.THINK_START, sp.THINK_END, "<fim_",
                       "<sep>", "<eom>")


def _in_bounds(number: str, schema: dict[str, Any], final: bool) -> bool:
    """Can the number prefix ``number`` still end within ``minimum``/``maximum`` (inclusive)?

    More digits only move a non-negative prefix up and a negative one down, so an open prefix is
    checked against the bound it can no longer come back from; a finished number against both.
    """
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is None and hi is None:
        return True
    negative = number.startswith("-")
    digits = number.lstrip("-").rstrip(".")
    if not digits:  # "" or "-"
        return not (negative and lo is not None and lo >= 0)
    v = float(number.rstrip("."))
    if final:
        return (lo is None or v >= lo) and (hi is None or v <= hi)
    return (lo is None or v >= lo) if negative else (hi is None or v <= hi)


class ToolCallConstraint:
    def __init__(self, envelope_schema: dict[str, Any], candidates: int = 64, max_think_chars: int = 40):
        self.tools: dict[str, dict[str, Any]] = {}
        for alt in envelope_schema.get("oneOf", []):
            name = alt["properties"]["name"]["const"]
            self.tools[name] = alt["properties"]["arguments"]
        if not self.tools:
            raise ValueError("envelope schema has no tools: build it with agent.protocol.tool_call_schema")
        self.candidates = candidates
        self.max_think_chars = max_think_chars

    # ------------------------------------------------------------------ prefix validity
    def valid(self, text: str) -> bool:
        """True if ``text`` can still be completed into a valid action."""
        rest = text
        if rest.startswith(sp.THINK_START):
            end = rest.find(sp.THINK_END)
            body = rest[len(sp.THINK_START): end if end >= 0 else None]
            lt = body.find("<")
            if end < 0:  # an open thought: plain text (no tags) that closes within max_think_chars
                if lt >= 0:
                    return lt <= self.max_think_chars and sp.THINK_END.startswith(body[lt:])
                return len(body) <= self.max_think_chars
            if lt >= 0 or len(body) > self.max_think_chars:
                return False
            rest = rest[end + len(sp.THINK_END):]
        elif sp.THINK_START.startswith(rest):
            return True
        if len(rest) <= len(sp.TOOL_CALL_START):
            return sp.TOOL_CALL_START.startswith(rest)
        if not rest.startswith(sp.TOOL_CALL_START):
            return False
        return self._envelope(rest[len(sp.TOOL_CALL_START):]) is not None

    def complete(self, text: str) -> bool:
        """True if ``text`` is a whole valid action."""
        text = text.split(sp.END_OF_TURN, 1)[0]
        i = text.find(sp.TOOL_CALL_START)
        return i >= 0 and self._envelope(text[i + len(sp.TOOL_CALL_START):]) == "done" and text.endswith(sp.TOOL_CALL_END)

    def _envelope(self, s: str) -> str | None:
        """None if invalid, "open" if a valid prefix, "done" once the closing tag is complete."""
        head = '{"name": "'
        if len(s) <= len(head):
            return "open" if head.startswith(s) else None
        if not s.startswith(head):
            return None
        s = s[len(head):]
        q = s.find('"')
        if q < 0:
            return "open" if any(n.startswith(s) for n in self.tools) else None
        name = s[:q]
        if name not in self.tools:
            return None
        s = s[q + 1:]
        mid = ', "arguments": {'
        if len(s) <= len(mid):
            return "open" if mid.startswith(s) else None
        if not s.startswith(mid):
            return None
        return self._arguments(s[len(mid):], self.tools[name])

    def _arguments(self, s: str, schema: dict[str, Any]) -> str | None:
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        seen: set[str] = set()
        while True:
            if s == "":
                return "open"
            if s[0] == "}":  # close arguments, then the envelope, then the tag
                if not required <= seen:
                    return None
                tail = "}}" + sp.TOOL_CALL_END
                rest = s
                if len(rest) < len(tail):
                    return "open" if tail.startswith(rest) else None
                return "done" if rest == tail else None
            if seen:
                if not set(props) - seen:
                    return None  # no key left to add: only "}" may follow
                if not s.startswith(", "):
                    return "open" if ", ".startswith(s) else None
                s = s[2:]
                if s == "":
                    return "open"
            if s[0] != '"':
                return None
            q = s.find('"', 1)
            if q < 0:
                key = s[1:]
                return "open" if any(k.startswith(key) and k not in seen for k in props) else None
            key = s[1:q]
            if key not in props or key in seen:
                return None
            s = s[q + 1:]
            if len(s) <= 2:
                return "open" if ": ".startswith(s) else None
            if not s.startswith(": "):
                return None
            s = s[2:]
            status, s = self._value(s, props[key])
            if status != "done":
                return status
            seen.add(key)

    @staticmethod
    def _value(s: str, schema: dict[str, Any]) -> tuple[str | None, str]:
        """Consume one value; ("done", rest) or ("open", "") or (None, "")."""
        kind = schema.get("type", "string")
        if s == "":
            return "open", ""
        if kind == "string":
            if s[0] != '"':
                return None, ""
            i = 1
            while i < len(s):
                if s[i] == "\\":
                    i += 2
                    continue
                if s[i] == '"':
                    val = s[1:i]
                    if any(tag in val for tag in _SPECIAL_IN_STRINGS):
                        return None, ""
                    enum = schema.get("enum")
                    if enum is not None and val not in enum:
                        return None, ""
                    if len(val) < schema.get("minLength", 0):
                        return None, ""
                    return "done", s[i + 1:]
                i += 1
            if any(tag in s[1:] for tag in _SPECIAL_IN_STRINGS):
                return None, ""
            enum = schema.get("enum")
            if enum is not None and not any(str(e).startswith(s[1:]) for e in enum):
                return None, ""
            return "open", ""
        if kind == "boolean":
            for word in ("true", "false"):
                if s.startswith(word):
                    return "done", s[len(word):]
                if word.startswith(s):
                    return "open", ""
            return None, ""
        pattern = _INT if kind == "integer" else _NUM
        m = pattern.match(s)
        n = m.end() if m else 0
        if n == len(s):
            # an integer 0 cannot grow more digits: its bounds are checked as final already
            final = kind == "integer" and s.lstrip("-") == "0"
            return ("open", "") if _in_bounds(s, schema, final) else (None, "")
        if n == 0 or s[n - 1] in "-." or not _in_bounds(s[:n], schema, final=True):
            return None, ""
        return "done", s[n:]

    # ------------------------------------------------------------------ AR interface
    def start(self) -> str:
        return ""

    def advance(self, state: str, token_id: int, tokenizer: Any) -> str:
        return state + tokenizer.decode([token_id])

    def best_valid(self, state: str, logits: Tensor, tokenizer: Any) -> int:
        """The highest-scoring token that keeps ``state`` a valid prefix (greedy, without a full mask).

        Walks the candidates best-first and stops at the first valid one: on a trained model that is
        usually the argmax, so one validity check instead of ``candidates``.
        """
        if self.complete(state):
            return tokenizer.end_of_turn_id
        for t in torch.topk(logits, min(self.candidates, logits.shape[-1])).indices.tolist():
            if self.valid(state + tokenizer.decode([t])):
                return t
        return int(self.mask_logits(logits[None], [state], tokenizer)[0].argmax())

    def mask_logits(self, logits: Tensor, states: Sequence[str], tokenizer: Any) -> Tensor:
        """Keep, per row, only the top candidates that keep the text a valid prefix."""
        out = torch.full_like(logits, float("-inf"))
        k = min(self.candidates, logits.shape[-1])
        top = torch.topk(logits, k, dim=-1).indices
        for b, state in enumerate(states):
            if self.complete(state):
                out[b, tokenizer.end_of_turn_id] = 0.0
                continue
            kept = [int(t) for t in top[b] if self.valid(state + tokenizer.decode([int(t)]))]
            if not kept:  # nothing among the candidates: fall back to the full vocabulary scan
                kept = [t for t in range(logits.shape[-1]) if self.valid(state + tokenizer.decode([t]))][:1]
            if kept:
                out[b, kept] = logits[b, kept]
            else:
                out[b, tokenizer.end_of_turn_id] = 0.0
        return out

    # ------------------------------------------------------------------ diffusion interface
    def commit_run(self, text: str, block: list[int], masked: list[bool], logits: Tensor, tokenizer: Any,
                   threshold: float | None, mask_id: int) -> list[tuple[int, int]]:
        """(position, token) commits for a diffusion step: a left-contiguous run of valid tokens.

        The first masked position always gets its best valid token; the following masked
        positions join the run while their best valid token is confident (> ``threshold``).
        """
        for j, m in enumerate(masked):  # text = committed action so far + the committed prefix of the block
            if m:
                break
            text += tokenizer.decode([block[j]])
        else:
            return []
        probs = logits.float().softmax(-1)
        commits: list[tuple[int, int]] = []
        for pos in range(j, len(block)):
            if not masked[pos]:
                break
            if self.complete(text):
                tok_id, conf = tokenizer.end_of_turn_id, 1.0
            else:
                row = logits[pos].clone()
                row[mask_id] = float("-inf")
                tok_id = self.best_valid(text, row, tokenizer)
                conf = float(probs[pos, tok_id])
            if commits and (threshold is None or conf <= threshold):
                break
            commits.append((pos, tok_id))
            text += tokenizer.decode([tok_id])
        return commits
