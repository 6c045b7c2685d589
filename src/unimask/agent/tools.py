"""Agent tools: JSON-schema-declared callables whose failures become readable observations.

``SearchTool`` ranks a local corpus with BM25 (``bm25s``; the index is built once and cached
on disk, keyed by a hash of the corpus), ``OpenTool`` shows one document, ``PythonTool`` runs
code in the sandbox, ``AnswerTool`` ends the episode. A tool never raises into the loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bm25s
import jsonschema

from unimask.sandbox import SandboxLimits, run_python


@dataclass
class Observation:
    text: str
    error: bool = False
    final: bool = False  # the episode ends (answer)


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., str] = field(repr=False)
    final: bool = False

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def validate(self, arguments: Any) -> str | None:
        """None if ``arguments`` match the schema, else a short reason."""
        try:
            jsonschema.validate(arguments, self.parameters)
        except jsonschema.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path) or "arguments"
            if e.validator == "enum" and len(e.validator_value) > 8:  # never echo a list of thousands of ids
                return f"{where}: {e.instance!r} is not one of the {len(e.validator_value)} allowed values"
            return f"{where}: {e.message}"
        return None

    def __call__(self, arguments: dict[str, Any]) -> Observation:
        try:
            return Observation(self.fn(**arguments), final=self.final)
        except Exception as e:  # a tool's failure is the model's observation, never a crash
            return Observation(f"error: {self.name} failed: {type(e).__name__}: {e}", error=True)


Document = dict[str, str]  # {"id", "title", "text"}


def _cache_dir() -> Path:
    return Path(os.environ.get("UNIMASK_CACHE", Path.home() / ".cache" / "unimask"))


class BM25Index:
    """BM25 over ``title + text`` of documents, cached under ``cache_dir/bm25-<hash>``."""

    def __init__(self, docs: Sequence[Document], cache_dir: Path | None = None):
        self.docs = list(docs)
        if not self.docs:
            raise ValueError("cannot index an empty corpus")
        digest = hashlib.sha256(json.dumps([(d["id"], d["title"], d["text"]) for d in self.docs]).encode())
        path = (cache_dir or _cache_dir()) / f"bm25-{digest.hexdigest()[:16]}"
        corpus = [f"{d['title']} {d['title']} {d['text']}" for d in self.docs]
        if (path / "params.index.json").exists():
            self.retriever = bm25s.BM25.load(str(path))
        else:
            self.retriever = bm25s.BM25()
            self.retriever.index(bm25s.tokenize(corpus, stopwords=None, show_progress=False), show_progress=False)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            self.retriever.save(str(tmp))
            try:
                os.replace(tmp, path)
            except OSError:  # another process saved it first
                shutil.rmtree(tmp, ignore_errors=True)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        tokens = bm25s.tokenize([query], stopwords=None, show_progress=False)
        if not tokens.vocab:
            return []
        k = max(1, min(k, len(self.docs)))
        idx, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        return [(int(i), float(s)) for i, s in zip(idx[0], scores[0], strict=True) if s > 0]


def search_tool(index: BM25Index, summarize: Callable[[Document], str], max_k: int = 5,
                max_query_chars: int = 200) -> Tool:
    def run(query: str, k: int = 3) -> str:
        hits = index.search(query, min(k, max_k))
        if not hits:
            return "no results"
        return "\n".join(f"{index.docs[i]['id']}: {summarize(index.docs[i])}" for i, _ in hits)

    return Tool(
        "search",
        "Search the documentation; returns doc ids with a summary.",
        {"type": "object", "properties": {"query": {"type": "string", "minLength": 1, "maxLength": max_query_chars},
                                          "k": {"type": "integer", "minimum": 1, "maximum": max_k}},
         "required": ["query"], "additionalProperties": False},
        run,
    )


def open_tool(docs: Sequence[Document], render: Callable[[Document], str]) -> Tool:
    by_id = {d["id"]: d for d in docs}

    def run(doc_id: str) -> str:
        if doc_id not in by_id:
            return f"error: no document {doc_id!r}; use an id returned by search"
        return render(by_id[doc_id])

    # the ids are an enum, so a constrained agent can only open documents that exist
    return Tool(
        "open",
        "Open a document by id.",
        {"type": "object", "properties": {"doc_id": {"type": "string", "enum": sorted(by_id)}},
         "required": ["doc_id"], "additionalProperties": False},
        run,
    )


def python_tool(timeout_s: float = 5.0, memory_mb: int = 512, max_output: int = 2000) -> Tool:
    def run(code: str) -> str:
        res = run_python(code, SandboxLimits(wall_time=timeout_s, memory_mb=memory_mb))
        out = (res.stdout + ("\n" + res.stderr if res.stderr else "")).strip()
        return f"[{res.status}] {out[:max_output]}" if out else f"[{res.status}]"

    return Tool(
        "python",
        "Run Python code in a sandbox; returns stdout/stderr.",
        {"type": "object", "properties": {"code": {"type": "string", "minLength": 1}},
         "required": ["code"], "additionalProperties": False},
        run,
    )


def answer_tool(max_chars: int = 2000) -> Tool:
    return Tool(
        "answer",
        "Give the final answer and finish.",
        {"type": "object", "properties": {"text": {"type": "string", "minLength": 1, "maxLength": max_chars}},
         "required": ["text"],
         "additionalProperties": False},
        lambda text: text,
        final=True,
    )
