"""DocQA datasets: oracle trajectories in the training JSONL format, name-swapped copies, and the
built dataset with its report."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unimask.envs.docqa.baselines import breakdown, trivial_baseline
from unimask.envs.docqa.environment import DocQAEnvironment
from unimask.envs.docqa.oracle import oracle_trajectories
from unimask.io import atomic_write_text


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


def shuffle_hits(record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The same episode with the lines of every search result in a drawn order.

    The oracle reads its next action from the line that matches the name, wherever it is, so the
    episode stays correct; an agent fine-tuned on such copies must find that line by matching the
    name, not by its place (BM25 usually ranks it first, and a copier's bias is the latest line).
    """
    out = json.loads(json.dumps(record))
    turns = out["turns"]
    for prev, t in zip(turns, turns[1:], strict=False):
        lines = t["content"].split("\n")
        if t["role"] == "tool" and prev["role"] == "assistant" and '"search"' in prev["content"] and len(lines) > 1:
            t["content"] = "\n".join(lines[i] for i in rng.permutation(len(lines)))
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
