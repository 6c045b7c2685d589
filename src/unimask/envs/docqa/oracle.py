"""The DocQA oracle: a scripted policy that solves tasks through the real tools, reading answers
from observations (not from the gold), with an optional rate of realistic recoveries."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from unimask.agent.env import Task
from unimask.agent.loop import LoopConfig, run_episodes
from unimask.agent.policy import ScriptedPolicy
from unimask.agent.protocol import format_action
from unimask.envs.docqa.environment import DocQAEnvironment, _read_default
from unimask.tokenizer.chat import Turn


def oracle_action(env: DocQAEnvironment, task: Task, turns: Sequence[Turn], rng: np.random.Generator,
                  recovery_rate: float = 0.0, misses: set[str] | None = None) -> str:
    """The next oracle action given the trajectory so far (reads observations, not the gold).

    A deliberate miss (a recovery's bad first query) is also added to ``misses``, so the
    trajectory can keep it as context without teaching it.
    """
    actions = [t for t in turns if t.role == "assistant"]
    obs = [t.content for t in turns if t.role == "tool"]
    kind, meta = task.meta["type"], task.meta
    query = {"module": meta.get("name"), "default": meta["doc_id"], "mention_default": meta.get("via")}.get(kind) or \
        task.question.split("does this: ", 1)[-1].rstrip("?")
    searched = [json.loads(a.content.split("<tool_call>", 1)[1].split("</tool_call>", 1)[0])
                for a in actions]
    n_search = sum(1 for c in searched if c["name"] == "search")
    if not actions:
        miss = recovery_rate > 0 and rng.random() < recovery_rate
        if miss:
            action = format_action("search", {"query": _typo(query, rng)}, "search for it")
            if misses is not None:
                misses.add(action)
            return action
        return format_action("search", {"query": query}, "search for it")
    last = obs[-1] if obs else ""
    if searched[-1]["name"] == "search":
        hit = _first_hit(last, meta.get("name") if kind == "module" else None)
        if hit is None:
            if n_search >= 3:
                return format_action("answer", {"text": "unknown"}, "give up")
            return format_action("search", {"query": query}, "retry the search")
        if kind == "module":
            return format_action("answer", {"text": hit[1]}, "found the module")
        if kind == "summary":
            return format_action("answer", {"text": hit[0]}, "found it")
        target = query if kind in ("default", "mention_default") and query in last else hit[0]
        return format_action("open", {"doc_id": target}, "open it")
    opened = [c["arguments"]["doc_id"] for c in searched if c["name"] == "open"]
    if kind == "mention_default" and len(opened) == 1:
        named = env._mentioned(last, opened[0])
        if named is not None:
            return format_action("open", {"doc_id": named}, "open the function it names")
    value = _read_default(last.split("\n", 1)[0], meta["param"])
    return format_action("answer", {"text": value or "unknown"}, "read the default")


def _typo(query: str, rng: np.random.Generator) -> str:
    """A realistic miss: a truncated query that no longer names the target."""
    words = query.replace(".", " ").split()
    return words[0][: max(2, len(words[0]) // 2)] + "zq"


_LINE = re.compile(r"^(\S+): \((\w+) in `([\w.]+)`\)", re.M)


def _first_hit(observation: str, bare: str | None) -> tuple[str, str] | None:
    """(doc id, module) of the first search hit (whose last name is ``bare``, if given)."""
    for m in _LINE.finditer(observation):
        if bare is None or m.group(1).rsplit(".", 1)[-1] == bare:
            return m.group(1), m.group(3)
    return None


class ByteTokenizer:
    """A stand-in tokenizer for the scripted oracle when none is given: one id per UTF-8 byte."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_prompt(self, text: str) -> list[int]:
        return self.encode(text)


def oracle_trajectories(env: DocQAEnvironment, split: str, tokenizer: Any = None, recovery_rate: float = 0.1,
                        seed: int = 0, limit: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Run the oracle through the real tools; returns the agent loop's episode records."""
    tasks = env.tasks(split)[: limit or None]
    by_question = {t.question: t for t in tasks}
    rng = np.random.default_rng(seed)
    misses: set[str] = set()

    def act(turns: list[Turn]) -> str:
        question = next(t.content for t in turns if t.role == "user")
        return oracle_action(env, by_question[question], turns, rng, recovery_rate, misses)

    policy = ScriptedPolicy(act, tokenizer or ByteTokenizer())
    cfg = LoopConfig(max_rounds=6, max_context_tokens=100_000, batch_size=64)
    records = run_episodes(env, tasks, policy, cfg, progress=progress)
    for r in records:  # the misses stay in the context; only the recovery is taught
        for t in r["turns"]:
            if t["role"] == "assistant" and t["content"] in misses:
                t["trainable"] = False
    return records
