"""OpenAI chat messages <-> unimask's chat template and tool-call protocol.

Messages render with ``unimask.tokenizer.chat`` (the format agents are fine-tuned on); OpenAI
``tools`` become the agent protocol's system-prompt listing; an assistant message's
``tool_calls`` render as ``<tool_call>{json}</tool_call>``; a generated call is parsed back into
an OpenAI ``tool_calls`` entry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unimask.agent.protocol import format_action, parse_action, system_prompt
from unimask.agent.tools import Tool
from unimask.serve.schemas import ChatRequest
from unimask.tokenizer import special as sp
from unimask.tokenizer.chat import Turn, render_text


@dataclass
class ChatRendering:
    prompt: str
    stop: tuple[str, ...]
    parse: Callable[[str], tuple[str | None, list[dict[str, Any]]]]
    hold_marker: str | None  # streaming stops showing content once a tool call starts


def _tools(req: ChatRequest) -> list[Tool]:
    if not req.tools or req.tool_choice == "none":
        return []
    return [Tool(t.function.name, t.function.description, t.function.parameters, fn=lambda **_: "")
            for t in req.tools]


def render_chat(req: ChatRequest) -> ChatRendering:
    tools = _tools(req)
    turns: list[Turn] = []
    system_parts = [m.text() for m in req.messages if m.role in ("system", "developer")]
    if tools:
        system_parts.append(system_prompt(tools))
    if system_parts:
        turns.append(Turn("system", "\n".join(p for p in system_parts if p)))
    for m in req.messages:
        if m.role in ("system", "developer"):
            continue
        if m.role == "assistant":
            text = m.text()
            for call in m.tool_calls or []:
                try:
                    args = json.loads(call.function.arguments or "{}")
                except json.JSONDecodeError:
                    raise ValueError(f"tool call {call.function.name!r} has arguments that are not JSON") from None
                text += format_action(call.function.name, args)
            turns.append(Turn("assistant", text))
        elif m.role == "tool":
            turns.append(Turn("tool", m.text()))
        else:
            turns.append(Turn("user", m.text()))
    if not any(t.role == "user" for t in turns):
        raise ValueError("messages must contain at least one user message")

    def parse(text: str) -> tuple[str | None, list[dict[str, Any]]]:
        text = text.split(sp.END_OF_TURN, 1)[0]
        if not tools or sp.TOOL_CALL_START not in text:
            return text, []
        action = parse_action(text, tools)
        content = text.split(sp.TOOL_CALL_START, 1)[0] or None
        if not action.ok:
            return text, []  # an invalid call is returned as text, never as a broken tool_calls entry
        call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": action.name, "arguments": json.dumps(action.arguments)}}
        return content, [call]

    return ChatRendering(render_text(turns, add_generation_prompt=True), (sp.END_OF_TURN,), parse,
                         sp.TOOL_CALL_START if tools else None)
