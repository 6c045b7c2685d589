"""The action protocol: ``<think>...</think>`` then one ``<tool_call>{json}</tool_call>``.

Parsing is tolerant of text around the call but strict about what counts as a call; every way
an action can fail has a name in ``Failure`` so the comparison can report invalid-call rates
by type. The same grammar, as a decoding constraint, is ``constraint.ToolCallConstraint``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from unimask.agent.tools import Tool
from unimask.tokenizer import special as sp


class Failure(str, Enum):
    NO_CALL = "no_call"
    MALFORMED_JSON = "malformed_json"
    UNKNOWN_TOOL = "unknown_tool"
    SCHEMA_VIOLATION = "schema_violation"
    TOOL_ERROR = "tool_error"
    BUDGET_EXCEEDED = "budget_exceeded"


@dataclass
class ParsedAction:
    thought: str | None
    name: str | None = None
    arguments: dict[str, Any] | None = None
    failure: Failure | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None


# The call's text around the tool name and the arguments' members, in ``json.dumps``'s canonical
# spacing as ``format_action`` writes it; ``constraint.ToolCallConstraint`` accepts exactly this form.
CALL_HEAD, CALL_MID, CALL_TAIL = '{"name": "', '", "arguments": {', "}}"

_CALL = re.compile(re.escape(sp.TOOL_CALL_START) + r"(.*?)(?:" + re.escape(sp.TOOL_CALL_END) + r"|$)", re.S)
_THINK = re.compile(re.escape(sp.THINK_START) + r"(.*?)" + re.escape(sp.THINK_END), re.S)


def format_action(name: str, arguments: dict[str, Any], thought: str | None = None) -> str:
    """The canonical text of an action (what oracle trajectories contain)."""
    think = f"{sp.THINK_START}{thought}{sp.THINK_END}" if thought else ""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{think}{sp.TOOL_CALL_START}{body}{sp.TOOL_CALL_END}"


def parse_action(text: str, tools: Sequence[Tool]) -> ParsedAction:
    think = _THINK.search(text)
    thought = think.group(1).strip() if think else None
    m = _CALL.search(text)
    if m is None:
        return ParsedAction(thought, failure=Failure.NO_CALL, detail="no <tool_call> found")
    try:
        call = json.loads(m.group(1).strip())
    except json.JSONDecodeError as e:
        return ParsedAction(thought, failure=Failure.MALFORMED_JSON, detail=f"invalid JSON: {e.msg}")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return ParsedAction(thought, failure=Failure.MALFORMED_JSON, detail='expected {"name": ..., "arguments": {...}}')
    name, args = call["name"], call.get("arguments", {})
    by_name = {t.name: t for t in tools}
    if name not in by_name:
        return ParsedAction(thought, name, failure=Failure.UNKNOWN_TOOL,
                            detail=f"unknown tool {name!r}; tools: {', '.join(by_name)}")
    if not isinstance(args, dict):
        return ParsedAction(thought, name, failure=Failure.SCHEMA_VIOLATION, detail="arguments must be an object")
    problem = by_name[name].validate(args)
    if problem:
        return ParsedAction(thought, name, args, failure=Failure.SCHEMA_VIOLATION, detail=problem)
    return ParsedAction(thought, name, args)


def tool_call_schema(tools: Sequence[Tool]) -> dict[str, Any]:
    """JSON schema of the envelope ``{"name": ..., "arguments": {...}}`` over the given tools."""
    return {
        "oneOf": [
            {"type": "object", "properties": {"name": {"const": t.name}, "arguments": t.parameters},
             "required": ["name", "arguments"], "additionalProperties": False}
            for t in tools
        ]
    }


def system_prompt(tools: Sequence[Tool], instructions: str = "") -> str:
    """A compact system turn listing the tools (small models, short contexts)."""
    listing = " | ".join(f"{t.name}({', '.join(t.parameters.get('properties', {}))})" for t in tools)
    head = f"{instructions.strip()} " if instructions else ""
    return f"{head}Tools: {listing}. Reply with {sp.TOOL_CALL_START}{{\"name\", \"arguments\"}}{sp.TOOL_CALL_END}."
