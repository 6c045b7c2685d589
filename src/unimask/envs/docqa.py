"""DocQA: question answering over the standard library's documentation with search/open tools.

The offline stand-in for the DLLM Agent paper's web search. Questions are generated from the
corpus with verified answers, 1-3 hops (lookups on the oracle's path), five types:

* ``module``  (1 hop): which module defines NAME? -- read it off a search result line;
* ``summary`` (1 hop): which function does THIS (its docstring summary)? -- the top search hit;
* ``default`` (2 hops): the default of PARAM in QUALNAME -- search, open, read the signature;
* ``summary_default`` (2 hops): the default of PARAM in the function that does THIS;
* ``mention_default`` (3 hops): the default of PARAM in the function named only inside the docs of
  QUALNAME (``Like quote(), but ...``) -- search, open QUALNAME, open the function it names.

Names the agent must copy into a tool call (a qualified name in the question, a module in a search
line) are written in backticks: a byte-level BPE then splits them exactly as inside the call's
JSON string, so copying is token-for-token (a leading space would give different tokens).

Splits are by module (a stable hash), so test modules are unseen in training. Observations are
compact on purpose: tiny models are fine-tuned on these trajectories. The oracle policy solves
tasks through the real tools, reading answers from observations (not from the gold), with an
optional rate of realistic recoveries (a query that misses, then a retry); the miss is
marked ``trainable: false``, so SFT teaches the retry but not the mistake.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unimask.agent.env import Task, exact_match, token_f1
from unimask.agent.loop import LoopConfig, run_episodes
from unimask.agent.policy import ScriptedPolicy
from unimask.agent.protocol import format_action, system_prompt
from unimask.agent.tools import BM25Index, Tool, answer_tool, open_tool, search_tool
from unimask.envs.corpus import load_corpus
from unimask.io import atomic_write_text
from unimask.tokenizer.chat import Turn

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
            answer_tool(),
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

    # ------------------------------------------------------------------ oracle
    def oracle_action(self, task: Task, turns: Sequence[Turn], rng: np.random.Generator,
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
            named = self._mentioned(last, opened[0])
            if named is not None:
                return format_action("open", {"doc_id": named}, "open the function it names")
        value = _read_default(last.split("\n", 1)[0], meta["param"])
        return format_action("answer", {"text": value or "unknown"}, "read the default")


def _typo(query: str, rng: np.random.Generator) -> str:
    """A realistic miss: a truncated query that no longer names the target."""
    words = query.replace(".", " ").split()
    return words[0][: max(2, len(words[0]) // 2)] + "zq"


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


def oracle_trajectories(env: DocQAEnvironment, split: str, tokenizer: Any = None, recovery_rate: float = 0.1,
                        seed: int = 0, limit: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Run the oracle through the real tools; returns the agent loop's episode records."""
    tasks = env.tasks(split)[: limit or None]
    by_question = {t.question: t for t in tasks}
    rng = np.random.default_rng(seed)
    misses: set[str] = set()

    def act(turns: list[Turn]) -> str:
        question = next(t.content for t in turns if t.role == "user")
        return env.oracle_action(by_question[question], turns, rng, recovery_rate, misses)

    policy = ScriptedPolicy(act, tokenizer or ByteTokenizer())
    cfg = LoopConfig(max_rounds=6, max_context_tokens=100_000, batch_size=64)
    records = run_episodes(env, tasks, policy, cfg, progress=progress)
    for r in records:  # the misses stay in the context; only the recovery is taught
        for t in r["turns"]:
            if t["role"] == "assistant" and t["content"] in misses:
                t["trainable"] = False
    return records


def breakdown(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """EM/F1 by question type and by hop count."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[f"type={r['meta']['type']}"].append(r)
        groups[f"hops={r['meta']['hops']}"].append(r)
    return {k: {"n": len(v), "em": float(np.mean([r["em"] for r in v])), "f1": float(np.mean([r["f1"] for r in v]))}
            for k, v in sorted(groups.items())}


def trivial_baseline(env: DocQAEnvironment, split: str, tasks: Sequence[Task] | None = None) -> dict[str, Any]:
    """Answer without tools: the most frequent training answer of the question's type, scored on
    ``tasks`` (default: the whole split); with the same breakdown as ``breakdown``."""
    common: dict[str, str] = {}
    for kind in TASK_TYPES:
        answers = Counter(t.answer for t in env.tasks("train") if t.meta["type"] == kind)
        common[kind] = answers.most_common(1)[0][0] if answers else ""
    tasks = env.tasks(split) if tasks is None else tasks
    em = [exact_match(common[t.meta["type"]], t.answer) for t in tasks]
    f1 = [token_f1(common[t.meta["type"]], t.answer) for t in tasks]
    slices = breakdown([{"meta": t.meta, "em": e, "f1": f} for t, e, f in zip(tasks, em, f1, strict=True)])
    return {"n": len(tasks), "em": float(np.mean(em)) if em else 0.0, "f1": float(np.mean(f1)) if f1 else 0.0,
            "breakdown": slices}


def to_training_record(record: dict[str, Any]) -> dict[str, Any]:
    """An episode record in the trajectory JSONL format (``unimask.tokenizer.chat`` turns)."""
    return {"task_id": record["task_id"], "question": record["question"], "answer": record["answer"],
            "prediction": record["prediction"], "em": record["em"], "type": record["meta"]["type"],
            "hops": record["meta"]["hops"], "module": record["meta"]["module"], "turns": record["turns"]}


_IDENT_PIECE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def _made_up(original: str, pool: Sequence[str], rng: np.random.Generator) -> str:
    """An identifier in the style of ``original`` (snake, Camel, dotted) glued from pieces of ``pool``."""
    parts = []
    for part in original.split("."):
        n = max(1, min(3, len(_IDENT_PIECE.findall(part))))
        pieces = [pool[int(rng.integers(len(pool)))] for _ in range(n)]
        if part[:1].isupper():
            parts.append("".join(p.capitalize() for p in pieces))
        elif "_" in part.strip("_"):
            parts.append("_".join(p.lower() for p in pieces))
        else:
            parts.append("".join(p.lower() for p in pieces))
        parts[-1] = "_" * (len(part) - len(part.lstrip("_"))) + parts[-1]
    return ".".join(parts)


def name_pieces(env: DocQAEnvironment) -> list[str]:
    """Word pieces of the corpus's names (``ABCMeta`` -> ``ABC``, ``Meta``): the stuff of made-up names."""
    found = {p for d in env.docs for p in _IDENT_PIECE.findall(d["id"]) if len(p) >= 2 and p.isalpha()}
    return sorted(found)


def swap_names(record: dict[str, Any], pool: Sequence[str], rng: np.random.Generator) -> dict[str, Any]:
    """The same episode with the task's names (module, and the function or class) made up.

    Every occurrence in the question, the actions, the observations and the answer is replaced
    consistently, so the trajectory still reads correctly but nothing about the names can be
    memorised: SFT on such copies rewards copying over recall.
    """
    meta = record["meta"]
    module = meta["module"]
    leaf = meta["doc_id"][len(module) + 1 :] if meta["doc_id"].startswith(module + ".") else ""
    names = {module: _made_up(module, pool, rng)}
    if leaf:
        names[leaf] = _made_up(leaf, pool, rng)
    pattern = re.compile("|".join(rf"(?<![\w]){re.escape(k)}(?![\w])" for k in sorted(names, key=len, reverse=True)))

    def sub(text: str) -> str:
        return pattern.sub(lambda m: names[m.group(0)], text)

    out = json.loads(json.dumps(record))
    for t in out["turns"]:
        t["content"] = sub(t["content"])
    for k in ("question", "answer", "prediction"):
        if isinstance(out.get(k), str):
            out[k] = sub(out[k])
    out["task_id"] = f"{record['task_id']}-swap"
    return out


def write_trajectories(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """Write the oracle's episodes as JSONL (atomically); returns the path."""
    lines = [json.dumps(to_training_record(r), ensure_ascii=False) for r in records]
    atomic_write_text(Path(path), "\n".join(lines) + ("\n" if lines else ""))
    return Path(path)


def build_dataset(env: DocQAEnvironment, out_dir: str | Path, tokenizer: Any = None, recovery_rate: float = 0.1,
                  seed: int = 0) -> dict[str, Any]:
    """Oracle trajectories for every split plus the metrics report (oracle vs trivial baseline)."""
    out = Path(out_dir)
    report: dict[str, Any] = {"difficulty": env.cfg.difficulty, "task_types": env.cfg.task_types,
                              "recovery_rate": recovery_rate, "splits": {}}
    for split in ("train", "val", "test"):
        recs = oracle_trajectories(env, split, tokenizer, recovery_rate=recovery_rate, seed=seed)
        write_trajectories(out / f"{split}.jsonl", recs)
        em = float(np.mean([r["em"] for r in recs])) if recs else 0.0
        f1 = float(np.mean([r["f1"] for r in recs])) if recs else 0.0
        report["splits"][split] = {"n": len(recs), "oracle_em": em, "oracle_f1": f1,
                                   "breakdown": breakdown(recs), "trivial": trivial_baseline(env, split)}
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    return report
