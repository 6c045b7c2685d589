"""DocQA metrics without a model: EM/F1 breakdowns by type and hops, and the no-tools baseline."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from unimask.agent.env import Task, exact_match, token_f1
from unimask.envs.docqa.environment import TASK_TYPES, DocQAEnvironment


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
