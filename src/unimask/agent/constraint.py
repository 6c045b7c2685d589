"""``ToolCallConstraint``: the agent's tool-call grammar as a sampling ``Constraint``.

Built from the JSON schema of the tool-call envelope (``protocol.tool_call_schema``: a ``oneOf``
of ``{"name": {"const": ...}, "arguments": {...}}``), it accepts an optional
``<think>...</think>`` and then exactly ``<tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>``
in the canonical spacing ``protocol.format_action`` writes (``protocol.CALL_HEAD``/``CALL_MID``/
``CALL_TAIL``). Supported argument schema subset: an object with ``properties`` whose types are
``string`` (optionally ``enum``, ``minLength``, ``maxLength``), ``integer`` or ``number`` (optionally
``minimum``/``maximum``) or ``boolean``, ``required`` keys, and no other keys
(``additionalProperties: false`` is assumed). ``maxLength`` forces the closing quote, so a model
caught in a copy loop still ends its call; an ``enum`` of thousands of ids costs a bisection.

Decoding is incremental: a sampler holds a parser ``State`` (an immutable tuple) for the text
committed so far and ``feed``s it each candidate token's text, so a check costs the token's few
characters, never a re-parse of the action. ``valid``/``complete`` are the whole-text reference
the parser is tested against. ``forced`` is the text the schema admits as the only continuation
(JSON punctuation, key names, a tool name once its prefix is unique). The token-level operations
the samplers call come from ``sampling.constraint.TextConstraint``.
"""

from __future__ import annotations

import bisect
import os
import re
from typing import Any

from unimask.agent.protocol import CALL_HEAD, CALL_MID, CALL_TAIL
from unimask.sampling.constraint import TextConstraint
from unimask.tokenizer import special as sp

_INT = re.compile(r"-?(0|[1-9]\d*)?")
_NUM = re.compile(r"-?(\d+(\.\d*)?)?")
# special tokens never belong inside an argument string (they would also break parsing)
_SPECIAL_IN_STRINGS = ("<|", "<mask_", sp.TOOL_CALL_START, sp.TOOL_CALL_END, sp.THINK_START, sp.THINK_END, "<fim_",
                       "<sep>", "<eom>")
_TAGS = (sp.TOOL_CALL_START, sp.TOOL_CALL_END, sp.THINK_START, sp.THINK_END)
_DONE = ("done",)

# A parser state: ("lit", ((literal, next state), ...), chars matched) | ("think", body chars) |
# ("args", tool, keys seen) | ("str", tool, seen, key, raw value, escape pending) |
# ("num", tool, seen, key, digits) | ("done",). None means the text can no longer be completed.
State = tuple


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


class _Enum:
    """A string enum as a sorted tuple: prefix tests and the shared continuation by bisection."""

    def __init__(self, values: list[Any]):
        self.values = tuple(sorted({str(v) for v in values}))

    def _range(self, prefix: str) -> tuple[int, int]:
        lo = bisect.bisect_left(self.values, prefix)
        return lo, bisect.bisect_left(self.values, prefix + "\U0010ffff", lo)

    def __contains__(self, value: str) -> bool:
        i = bisect.bisect_left(self.values, value)
        return i < len(self.values) and self.values[i] == value

    def has_prefix(self, prefix: str) -> bool:
        i = bisect.bisect_left(self.values, prefix)
        return i < len(self.values) and self.values[i].startswith(prefix)

    def continuation(self, prefix: str) -> str:
        """What every member starting with ``prefix`` continues with (the closing quote when one is left)."""
        lo, hi = self._range(prefix)
        if hi - lo == 1:
            return self.values[lo][len(prefix):] + '"'
        if hi == lo:
            return ""
        # the members with a prefix are contiguous: their common prefix is that of the first and last
        return os.path.commonprefix([self.values[lo], self.values[hi - 1]])[len(prefix):]


def _string_rules(schema: dict[str, Any]) -> tuple[_Enum | None, int, int | None]:
    enum = schema.get("enum")
    return (_Enum(enum) if enum is not None else None), schema.get("minLength", 0), schema.get("maxLength")


class ToolCallConstraint(TextConstraint):
    def __init__(self, envelope_schema: dict[str, Any], candidates: int = 64, max_think_chars: int = 40):
        super().__init__(candidates)
        self.tools: dict[str, dict[str, Any]] = {}
        self._strings: dict[tuple[str, str], tuple[_Enum | None, int, int | None]] = {}
        for alt in envelope_schema.get("oneOf", []):
            name = alt["properties"]["name"]["const"]
            self.tools[name] = alt["properties"]["arguments"]
            for key, prop in self.tools[name].get("properties", {}).items():
                if prop.get("type", "string") == "string":
                    self._strings[name, key] = _string_rules(prop)
        if not self.tools:
            raise ValueError("envelope schema has no tools: build it with agent.protocol.tool_call_schema")
        self.max_think_chars = max_think_chars
        self._after_think: State = ("lit", ((sp.TOOL_CALL_START, self._head()),), 0)
        self._start: State = ("lit", ((sp.THINK_START, ("think", 0)), (sp.TOOL_CALL_START, self._head())), 0)

    def _head(self) -> State:
        """After ``<tool_call>``: the envelope up to the first argument, one literal per tool."""
        return ("lit", tuple((CALL_HEAD + name + CALL_MID, ("args", name, frozenset()))
                             for name in self.tools), 0)

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
        head = CALL_HEAD
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
        mid = CALL_MID[1:]  # after the name's closing quote
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
                tail = CALL_TAIL + sp.TOOL_CALL_END
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
            enum, min_len, max_len = _string_rules(schema)
            i = 1
            while i < len(s):
                if s[i] == "\\":
                    i += 2
                    continue
                if s[i] == '"':
                    val = s[1:i]
                    if any(tag in val for tag in _SPECIAL_IN_STRINGS):
                        return None, ""
                    if enum is not None and val not in enum:
                        return None, ""
                    if len(val) < min_len or (max_len is not None and len(val) > max_len):
                        return None, ""
                    return "done", s[i + 1:]
                i += 1
            if any(tag in s[1:] for tag in _SPECIAL_IN_STRINGS):
                return None, ""
            if enum is not None and not enum.has_prefix(s[1:]):
                return None, ""
            escape_pending = i > len(s)
            if max_len is not None and (len(s) - 1 > max_len or (escape_pending and len(s) - 1 >= max_len)):
                return None, ""  # (an escape at the limit could never be completed)
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

    # ------------------------------------------------------------------ incremental parser
    def start(self) -> State:
        """The state of the empty action."""
        return self._start

    def feed(self, state: State | None, text: str) -> State | None:
        """The state after ``text``, or None once the action can no longer be completed."""
        for ch in text:
            if state is None:
                return None
            state = self._step(state, ch)
        return state

    def state_of(self, text: str) -> State | None:
        return self.feed(self._start, text)

    def is_complete(self, state: State | None) -> bool:
        return state == _DONE

    def _key(self, tool: str, seen: frozenset[str]) -> State:
        return ("lit", tuple((k + '": ', self._value_start(tool, seen, k)) for k in self.tools[tool].get("properties", {})
                             if k not in seen), 0)

    def _value_start(self, tool: str, seen: frozenset[str], key: str) -> State:
        kind = self.tools[tool]["properties"][key].get("type", "string")
        if kind == "string":
            return ("lit", (('"', ("str", tool, seen, key, "", False)),), 0)
        if kind == "boolean":
            after = ("args", tool, seen | {key})
            return ("lit", (("true", after), ("false", after)), 0)
        return ("num", tool, seen, key, "")

    def _step(self, st: State, ch: str) -> State | None:
        """One character of the grammar ``valid`` checks (see the module docstring)."""
        kind = st[0]
        if kind == "lit":
            i = st[2]
            keep = tuple(c for c in st[1] if c[0][i] == ch)
            if not keep:
                return None
            for lit, nxt in keep:
                if len(lit) == i + 1:
                    return nxt
            return ("lit", keep, i + 1)
        if kind == "think":
            if ch == "<":
                return ("lit", ((sp.THINK_END, self._after_think),), 1)
            return ("think", st[1] + 1) if st[1] < self.max_think_chars else None
        if kind == "args":
            tool, seen = st[1], st[2]
            schema = self.tools[tool]
            if ch == "}":
                if not set(schema.get("required", [])) <= seen:
                    return None
                return ("lit", ((CALL_TAIL + sp.TOOL_CALL_END, _DONE),), 1)
            if not set(schema.get("properties", {})) - seen:
                return None
            if seen:
                return ("lit", ((', "', self._key(tool, seen)),), 1) if ch == "," else None
            return self._key(tool, seen) if ch == '"' else None
        if kind == "str":
            _, tool, seen, key, raw, esc = st
            enum, min_len, max_len = self._strings[tool, key]
            if ch == '"' and not esc:
                if (enum is not None and raw not in enum) or len(raw) < min_len:
                    return None
                return ("args", tool, seen | {key})
            raw += ch
            if max_len is not None and (len(raw) > max_len or (ch == "\\" and not esc and len(raw) >= max_len)):
                return None
            if any(raw.endswith(tag) for tag in _SPECIAL_IN_STRINGS):
                return None
            if enum is not None and not enum.has_prefix(raw):
                return None
            return ("str", tool, seen, key, raw, not esc and ch == "\\")
        if kind == "num":
            _, tool, seen, key, buf = st
            schema = self.tools[tool]["properties"][key]
            integer = schema.get("type") == "integer"
            s = buf + ch
            m = (_INT if integer else _NUM).match(s)
            n = m.end() if m else 0
            if n == len(s):
                final = integer and s.lstrip("-") == "0"  # an integer 0 cannot grow more digits
                return ("num", tool, seen, key, s) if _in_bounds(s, schema, final) else None
            if n == 0 or s[n - 1] in "-." or not _in_bounds(s[:n], schema, final=True):
                return None
            return self.feed(("args", tool, seen | {key}), s[n:])
        return None  # done: nothing may follow the closing tag

    # ------------------------------------------------------------------ forced continuations
    def forced(self, state: State | None) -> str:
        """The text every valid completion of ``state`` starts with (never a part of a special tag)."""
        out = ""
        while state is not None:
            chunk = self._forced_chunk(state)
            nxt = self.feed(state, chunk) if chunk else None
            if nxt is None:
                break
            out, state = out + chunk, nxt
        lt = out.rfind("<")
        if lt >= 0 and any(tag.startswith(out[lt:]) and tag != out[lt:] for tag in _TAGS):
            out = out[:lt]  # a special tag is one token: never write half of one
        return out

    def _forced_chunk(self, st: State) -> str:
        kind = st[0]
        if kind == "lit":
            rests = [lit[st[2]:] for lit, _ in st[1]]
            return rests[0] if len(rests) == 1 else os.path.commonprefix(rests)
        if kind == "args":
            tool, seen = st[1], st[2]
            schema = self.tools[tool]
            can_close = set(schema.get("required", [])) <= seen
            can_key = bool(set(schema.get("properties", {})) - seen)
            if can_close != can_key:
                return "}" if can_close else (', "' if seen else '"')
            return ""
        if kind == "str":
            enum, _, max_len = self._strings[st[1], st[3]]
            if st[5]:
                return ""
            if enum is not None:
                return enum.continuation(st[4])
            return '"' if max_len is not None and len(st[4]) >= max_len else ""
        return ""

