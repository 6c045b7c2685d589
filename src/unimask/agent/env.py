"""The environment contract (tasks, their tools, their scoring) and answer metrics; the registry of
environments by name is ``unimask.envs``."""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from unimask.agent.tools import Tool


@dataclass
class Task:
    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


class Environment(Protocol):
    name: str

    def tasks(self, split: str) -> list[Task]: ...

    def tools(self) -> list[Tool]: ...

    def system_prompt(self) -> str: ...

    def score(self, task: Task, prediction: str | None) -> dict[str, float]: ...


def normalize_answer(s: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation/articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str | None, gold: str) -> float:
    if prediction is None:
        return 0.0
    if not normalize_answer(gold):  # punctuation-only answers such as "()" compare verbatim
        return float(prediction.strip() == gold.strip())
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str | None, gold: str) -> float:
    if prediction is None:
        return 0.0
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)
