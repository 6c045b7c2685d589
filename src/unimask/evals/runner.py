"""The resumable generate-then-execute loop shared by HumanEval and HumanEval infilling.

A benchmark is a list of ``ExecTask``s (a prompt for the model and a function turning a completion
into a test program). ``run_tasks`` draws ``num_samples`` completions per task in batches, runs the
programs in the sandbox pool, and keeps one JSONL record per (task, sample) in ``samples.jsonl``;
records already there are skipped, so an interrupted run picks up where it stopped. Also owns the
unbiased pass@k estimator of Chen et al. (2021).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unimask.io import atomic_write_text
from unimask.sampling.backbone import Backbone, Generation
from unimask.sandbox import SandboxLimits, run_many

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.json"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` pass: 1 - C(n-c, k) / C(n, k), computed
    as a running product so it never overflows."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}; raise num_samples")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass
class ExecTask:
    """One benchmark item: what the model sees and how a completion becomes a test program."""

    task_id: str
    prompt: str  # the prompt as given to ``generate`` (or the prefix for native infilling)
    program: Callable[[str], str]  # completion -> full program run in the sandbox
    reference: str | None = None  # the canonical completion, for exact match
    suffix: str | None = None  # infilling: the text after the hole (native ``infill`` backbones)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Batch:
    items: list[tuple[ExecTask, int]]
    gens: list[Generation]
    completions: list[str]
    nonce: str
    future: Future


GenerateFn = Callable[[Sequence[ExecTask]], list[Generation]]
PostprocessFn = Callable[[str], str]


def load_records(path: Path) -> dict[tuple[str, int], dict]:
    """Completed records keyed by (task_id, sample); a torn last line is ignored."""
    done: dict[tuple[str, int], dict] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            done[(rec["task_id"], int(rec["sample"]))] = rec
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return done


def _check_fingerprint(path: Path, fingerprint: dict[str, Any]) -> None:
    fp = json.loads(json.dumps(fingerprint, default=str))
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
        if diff:
            raise ValueError(
                f"{path.parent} holds samples from a different setting ({', '.join(diff)} differ: "
                f"{ {k: old.get(k) for k in diff} } vs { {k: fp.get(k) for k in diff} }); "
                "use another --output"
            )
    else:
        atomic_write_text(path, json.dumps(fp, indent=2) + "\n")


def _tail(s: str, n: int = 2000) -> str:
    return s if len(s) <= n else "..." + s[-n:]


def run_tasks(
    tasks: Sequence[ExecTask],
    generate: GenerateFn,
    output_dir: str | Path,
    *,
    num_samples: int = 1,
    batch_size: int = 8,
    postprocess: PostprocessFn | None = None,
    limits: SandboxLimits | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> list[dict]:
    """Generate and execute every missing (task, sample); return all records in task order.

    ``fingerprint`` (what decides the samples: model, decoding, prompt format) is kept in
    ``run.json``; resuming into a directory written with a different one is refused, so samples of
    two settings are never mixed.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fingerprint is not None:
        _check_fingerprint(out / RUN_FILE, fingerprint)
    path = out / SAMPLES_FILE
    done = load_records(path)
    todo = [(t, s) for t in tasks for s in range(num_samples) if (t.task_id, s) not in done]
    total = len(tasks) * num_samples
    if on_progress:
        on_progress(total - len(todo), total)
    finished = total - len(todo)

    def record(batch: _Batch) -> None:
        nonlocal finished
        results = batch.future.result()
        for (task, sample), gen, comp, res in zip(
            batch.items, batch.gens, batch.completions, results, strict=True
        ):
            rec = {
                "task_id": task.task_id,
                "sample": sample,
                "completion": comp,
                "raw": gen.text,
                "passed": res.passed and batch.nonce in res.stdout,
                "status": res.status,
                "exit_code": res.exit_code,
                "stderr": _tail(res.stderr),
                "nfe": gen.nfe,
                "gen_time": gen.wall_time,
                "exec_time": res.wall_time,
                "stop_reason": gen.stop_reason,
                **task.meta,
            }
            if task.reference is not None:
                rec["exact_match"] = comp.strip() == task.reference.strip()
            done[(task.task_id, sample)] = rec
        _write_records(path, tasks, num_samples, done)
        finished += len(batch.items)
        if on_progress:
            on_progress(finished, total)

    # One executor thread runs batch i's programs while the backbone generates batch i+1.
    pending: _Batch | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="exec") as executor:
        try:
            for i in range(0, len(todo), batch_size):
                items = todo[i : i + batch_size]
                gens = generate([t for t, _ in items])
                if len(gens) != len(items):
                    raise RuntimeError(f"backbone returned {len(gens)} generations for {len(items)} prompts")
                completions = [postprocess(g.text) if postprocess else g.text for g in gens]
                # A completion could exit(0) before the tests finish: a pass also needs this
                # unguessable nonce, printed after the check call.
                nonce = secrets.token_hex(16)
                programs = [
                    t.program(c) + f"\nprint({nonce!r})\n"
                    for (t, _), c in zip(items, completions, strict=True)
                ]
                batch = _Batch(
                    items, gens, completions, nonce, executor.submit(run_many, programs, limits, workers)
                )
                if pending is not None:
                    record(pending)
                pending = batch
        finally:
            if pending is not None:  # keep the last executed batch even if generation failed
                record(pending)
    return [done[(t.task_id, s)] for t in tasks for s in range(num_samples)]


def _write_records(path: Path, tasks: Sequence[ExecTask], num_samples: int, done: dict) -> None:
    # Rewritten whole and atomically after every batch: a crash leaves the previous complete file.
    order = {t.task_id: i for i, t in enumerate(tasks)}
    recs = sorted(
        done.values(), key=lambda r: (order.get(r["task_id"], len(order)), r["task_id"], r["sample"])
    )
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in recs))


def summarize(records: Sequence[dict], ks: Sequence[int] = (1, 10, 100), group: str | None = None) -> dict:
    """pass@k (mean over tasks with at least k samples), exact match, statuses and cost."""
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["task_id"], []).append(r)
    summary: dict[str, Any] = {"tasks": len(by_task), "samples": len(records)}
    for k in ks:
        vals = [
            pass_at_k(len(rs), sum(r["passed"] for r in rs), k) for rs in by_task.values() if len(rs) >= k
        ]
        if vals:
            summary[f"pass@{k}"] = float(np.mean(vals))
    if records and all("exact_match" in r for r in records):
        summary["exact_match"] = float(np.mean([r["exact_match"] for r in records]))
    if records:
        summary["mean_nfe"] = float(np.mean([r["nfe"] for r in records]))
        summary["mean_gen_time"] = float(np.mean([r["gen_time"] for r in records]))
    summary["status"] = dict(Counter(r["status"] for r in records))
    if group:
        summary["by_" + group] = {
            g: summarize([r for r in records if r.get(group) == g], ks)
            for g in sorted({r.get(group) for r in records if r.get(group) is not None})
        }
    return summary


def write_summary(output_dir: str | Path, summary: dict) -> Path:
    path = Path(output_dir) / SUMMARY_FILE
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return path


def describe_backbone(backbone: Backbone) -> str:
    """What identifies a backbone in ``run.json``: its kind and, when it has one, its source path."""
    src = getattr(backbone, "path", None) or getattr(backbone, "name_or_path", None)
    return (
        f"{getattr(backbone, 'kind', type(backbone).__name__)}:{src}"
        if src
        else str(getattr(backbone, "kind", "?"))
    )


def generate_with(
    backbone: Backbone, max_new_tokens: int, stop: Sequence[str] | None, **decoding: Any
) -> GenerateFn:
    """A ``GenerateFn`` that sends each task's prompt through ``backbone.generate``."""

    def fn(tasks: Sequence[ExecTask]) -> list[Generation]:
        t0 = time.perf_counter()
        gens = backbone.generate(
            [t.prompt for t in tasks], max_new_tokens=max_new_tokens, stop=stop, **decoding
        )
        for g in gens:
            if not g.wall_time:
                g.wall_time = (time.perf_counter() - t0) / max(1, len(gens))
        return gens

    return fn
