"""The DocQA environment: the corpus, its search/open/answer tools, the generated tasks and their
splits, and scoring."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unimask.agent.env import Task, exact_match, token_f1
from unimask.agent.protocol import system_prompt
from unimask.agent.tools import BM25Index, Tool, answer_tool, open_tool, search_tool
from unimask.envs.corpus import load_corpus

TASK_TYPES = ("module", "summary", "default", "summary_default", "mention_default")
HOPS = {"module": 1, "summary": 1, "default": 2, "summary_default": 2, "mention_default": 3}
# The difficulty knob: "easy" keeps the question types whose search query is a name copied from the
# question (learnable by tiny models in minutes); "full" adds the paraphrase (summary) questions.
DIFFICULTY = {"easy": ("module", "default"), "full": TASK_TYPES}
INSTRUCTIONS = "Answer the question about the Python standard library using the tools."


def _split_of(module: str) -> str:
    h = int(hashlib.sha256(module.encode()).hexdigest(), 16) % 10
    return "test" if h == 0 else "val" if h == 1 else "train"


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


@dataclass
class DocQAConfig:
    """Settings of the DocQA environment (load with ``unimask.config.load_config``)."""

    cache_dir: str = ".unimask_cache"
    difficulty: str = "full"  # "easy" or "full" (see DIFFICULTY); task_types, if given, wins
    task_types: list[str] = field(default_factory=list)
    search_k: int = 3
    max_default_len: int = 12
    seed: int = 0


class DocQAEnvironment:
    """The DocQA environment (``unimask.agent.env.Environment``): tasks, tools and scoring."""

    name = "docqa"

    @classmethod
    def from_config(cls, cfg: DocQAConfig) -> DocQAEnvironment:
        return cls(cfg.cache_dir, cfg.task_types or None, cfg.search_k, cfg.max_default_len, cfg.seed,
                   cfg.difficulty)

    def __init__(self, cache_dir: str | Path = ".unimask_cache", task_types: Sequence[str] | None = None,
                 search_k: int = 3, max_default_len: int = 12, seed: int = 0, difficulty: str = "full"):
        if difficulty not in DIFFICULTY:
            raise ValueError(f"unknown DocQA difficulty {difficulty!r}; choose from {sorted(DIFFICULTY)}")
        bad = [t for t in (task_types or ()) if t not in TASK_TYPES]
        if bad:
            raise ValueError(f"unknown DocQA task types {bad}; choose from {list(TASK_TYPES)}")
        types = list(task_types or DIFFICULTY[difficulty])
        self.cfg = DocQAConfig(str(cache_dir), difficulty, types, search_k, max_default_len, seed)
        self.docs = load_corpus(Path(cache_dir))
        self.by_id = {d["id"]: d for d in self.docs}
        self.index = BM25Index(self.docs, Path(cache_dir))
        self._tools = [
            search_tool(self.index, self._search_line, max_k=5),
            open_tool(self.docs, self._open_text),
            # answers are module names, doc ids or short defaults: a copy loop ends at this bound
            answer_tool(max_chars=max(len(d["id"]) for d in self.docs) + 8),
        ]
        self._tasks: dict[str, list[Task]] | None = None

    # ------------------------------------------------------------------ observations
    @staticmethod
    def _search_line(d: dict[str, Any]) -> str:
        return f"({d['kind']} in `{d['module']}`) {_short(d['summary'], 60)}"

    @staticmethod
    def _open_text(d: dict[str, Any]) -> str:
        body = d["text"].split("\n", 1)[1].replace("\n", " ") if "\n" in d["text"] else ""
        return f"{_short(d['signature'], 160)}\n{_short(body, 160)}"

    # ------------------------------------------------------------------ Environment protocol
    def tools(self) -> list[Tool]:
        return self._tools

    def system_prompt(self) -> str:
        return system_prompt(self._tools, INSTRUCTIONS)

    def score(self, task: Task, prediction: str | None) -> dict[str, float]:
        return {"em": exact_match(prediction, task.answer), "f1": token_f1(prediction, task.answer)}

    def tasks(self, split: str) -> list[Task]:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}: use train, val or test")
        if self._tasks is None:
            self._tasks = self._build_tasks()
        return [t for t in self._tasks[split] if t.meta["type"] in self.cfg.task_types]

    # ------------------------------------------------------------------ questions
    def _search_ids(self, query: str) -> list[str]:
        return [self.docs[i]["id"] for i, _ in self.index.search(query, self.cfg.search_k)]

    def _build_tasks(self) -> dict[str, list[Task]]:
        out: dict[str, list[Task]] = {"train": [], "val": [], "test": []}
        callables = [d for d in self.docs if d["kind"] in ("function", "class")]
        bare_counts = Counter(d["id"].rsplit(".", 1)[-1] for d in self.docs if d["kind"] != "module")
        summary_counts = Counter(d["summary"] for d in self.docs)

        def add(d: dict[str, Any], kind: str, question: str, answer: str, **meta: Any) -> None:
            n = sum(len(v) for v in out.values())
            task = Task(f"docqa-{n:05d}", question, answer,
                        {"type": kind, "hops": HOPS[kind], "doc_id": d["id"], "module": d["module"], **meta})
            out[_split_of(d["module"])].append(task)

        for d in callables:
            bare = d["id"].rsplit(".", 1)[-1]
            if bare_counts[bare] == 1 and d["id"] in self._search_ids(bare):
                add(d, "module", f"Which module defines `{bare}`?", d["module"], name=bare)
        for d in self.docs:
            if d["kind"] not in ("function", "method"):
                continue
            words = d["summary"].rstrip(".").split()
            good_summary = 4 <= len(words) <= 14 and summary_counts[d["summary"]] == 1
            hit = good_summary and self._search_ids(d["summary"])[:1] == [d["id"]]
            if hit and d["kind"] == "function":
                add(d, "summary", f"Which function does this: {d['summary'].rstrip('.')}?", d["id"])
            for p in self._readable_defaults(d):
                dv = p["default"]
                if d["id"] in self._search_ids(d["id"]):
                    add(d, "default", f"Default of {p['name']} in `{d['id']}`?", dv, param=p["name"])
                if hit:
                    add(d, "summary_default", f"Default of {p['name']} in the function that does this: "
                        f"{d['summary'].rstrip('.')}?", dv, param=p["name"])
        for d in self.docs:
            target = self._mentioned(self._open_text(d), d["id"])
            if target is None or d["id"] not in self._search_ids(d["id"]):
                continue
            for p in self._readable_defaults(self.by_id[target]):
                add(d, "mention_default", f"Default of {p['name']} in the function named in the docs of "
                    f"`{d['id']}`?", p["default"], param=p["name"], via=d["id"], target=target)
        return out

    def _readable_defaults(self, d: dict[str, Any]) -> list[dict[str, Any]]:
        """Parameters whose default is short and reads back verbatim from the opened signature."""
        sig = self._open_text(d).split("\n", 1)[0]
        return [p for p in d["params"] if p["default"] is not None and len(p["default"]) <= self.cfg.max_default_len
                and _read_default(sig, p["name"]) == p["default"]]

    def _mentioned(self, text: str, doc_id: str) -> str | None:
        """The one function or method that ``text`` (doc ``doc_id`` as opened) names as ``name()``.

        A name resolves in the doc's module, its class, or as a qualified id; None unless exactly one
        other function/method is named (ambiguous mentions make unverifiable questions).
        """
        doc = self.by_id[doc_id]
        scopes = (doc["module"] + ".", doc_id.rsplit(".", 1)[0] + ".", "")
        found = set()
        for name in set(_MENTION.findall(text.split("\n", 1)[-1])):
            for scope in scopes:
                hit = self.by_id.get(scope + name)
                if hit is not None and hit["id"] != doc_id and hit["kind"] in ("function", "method"):
                    found.add(hit["id"])
                    break
        return found.pop() if len(found) == 1 else None


def _read_default(signature: str, param: str) -> str | None:
    """The default written after ``param=`` in a signature line, up to its top-level ``,`` or ``)``."""
    m = re.search(rf"[(,*\s]{re.escape(param)}=", signature)
    if m is None:
        return None
    depth, quote, i = 0, "", m.end()
    for j in range(i, len(signature)):
        ch = signature[j]
        if quote:
            quote = "" if ch == quote and signature[j - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                return signature[i:j]
            depth -= 1
        elif ch == "," and depth == 0:
            return signature[i:j]
    return None


_MENTION = re.compile(r"(?<![\w.])([A-Za-z_][\w.]*)\(\)")
