"""Summaries, confidence intervals, plots and the Markdown report of an agent comparison.

Input is, per system (e.g. "AR", "DLLM", "DLLM unaligned"), the list of episode records the
agent loop writes (one dict per task). Everything here is plain arithmetic over those records,
so a report can be rebuilt from saved logs without re-running any model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unimask.agent.loop import EpisodeRecord
from unimask.agent.protocol import Failure
from unimask.io import atomic_write_text


def _mean(xs: Sequence[float]) -> float:
    return float(statistics.fmean(xs)) if xs else float("nan")


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def mean_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (seeded, so reports are stable)."""
    if not values:
        return float("nan"), float("nan")
    x = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    lo, hi = np.percentile(x[idx].mean(1), [2.5, 97.5])
    return float(lo), float(hi)


def summarize(episodes: Sequence[EpisodeRecord]) -> dict[str, Any]:
    """Accuracy, interaction counts, failure rates and cost of one system's episodes."""
    n = len(episodes)
    actions = sum(e["rounds"] for e in episodes)
    failures: Counter[str] = Counter()
    for e in episodes:
        failures.update(e.get("failures", {}))
    # Running out of context/token budget ends an episode without an action: not an invalid call.
    out_of_budget = failures.pop(Failure.BUDGET_EXCEEDED.value, 0)
    correct = [e for e in episodes if e["em"] >= 1.0]
    em_lo, em_hi = mean_ci([e["em"] for e in episodes])
    return {
        "tasks": n,
        "em": _mean([e["em"] for e in episodes]),
        "em_lo": em_lo,
        "em_hi": em_hi,
        "f1": _mean([e["f1"] for e in episodes]),
        "rounds_mean": _mean([e["rounds"] for e in episodes]),
        "rounds_median": _median([e["rounds"] for e in episodes]),
        "rounds_mean_correct": _mean([e["rounds"] for e in correct]),
        "tool_calls_mean": _mean([e["tool_calls"] for e in episodes]),
        "tool_calls_mean_correct": _mean([e["tool_calls"] for e in correct]),
        "invalid_call_rate": (sum(failures.values()) / actions) if actions else float("nan"),
        "invalid_by_type": {k: v / actions for k, v in sorted(failures.items())} if actions else {},
        "out_of_budget_rate": out_of_budget / n if n else float("nan"),
        "nfe_mean": _mean([e["nfe"] for e in episodes]),
        "tokens_mean": _mean([e["tokens"] for e in episodes]),
        "tokens_per_nfe": (sum(e["tokens"] for e in episodes) / max(1, sum(e["nfe"] for e in episodes))),
        "forced_share": (sum(e.get("forced_tokens", 0) for e in episodes) / max(1, sum(e["tokens"] for e in episodes))),
        "wall_mean": _mean([e["wall_time"] for e in episodes]),
        "wall_median": _median([e["wall_time"] for e in episodes]),
        "model_time_mean": _mean([e["model_time"] for e in episodes]),
        "tool_time_mean": _mean([e["tool_time"] for e in episodes]),
    }


def paired_speedup(
    base: Sequence[EpisodeRecord], other: Sequence[EpisodeRecord], n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Speed-up of ``other`` over ``base`` (ratio of mean wall time per task), paired by task id,
    with a 95% percentile-bootstrap confidence interval over tasks."""
    b = {e["task_id"]: e["wall_time"] for e in base}
    o = {e["task_id"]: e["wall_time"] for e in other}
    ids = sorted(set(b) & set(o))
    if not ids:
        return {"speedup": float("nan"), "lo": float("nan"), "hi": float("nan"), "tasks": 0}
    tb = np.array([b[i] for i in ids])
    to = np.array([o[i] for i in ids])
    point = tb.mean() / max(to.mean(), 1e-12)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    boots = tb[idx].mean(1) / np.maximum(to[idx].mean(1), 1e-12)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"speedup": float(point), "lo": float(lo), "hi": float(hi), "tasks": len(ids)}


def plot_latency(systems: Mapping[str, Sequence[EpisodeRecord]], path: Path) -> Path:
    """Empirical CDF and histogram of end-to-end wall time per task, one line per system."""
    import matplotlib  # slow to import, and only the report's plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, eps in systems.items():
        t = np.sort([e["wall_time"] for e in eps])
        if len(t) == 0:
            continue
        ax1.step(t, np.arange(1, len(t) + 1) / len(t), where="post", label=name)
        ax2.hist(t, bins=20, alpha=0.5, label=name)
    ax1.set(xlabel="wall time per task (s)", ylabel="fraction of tasks", title="Latency ECDF")
    ax2.set(xlabel="wall time per task (s)", ylabel="tasks", title="Latency histogram")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_latency(points: Mapping[str, tuple[float, float]], path: Path,
                          baseline_em: float | None = None) -> Path:
    """Scatter of (mean wall time, EM accuracy) for every system/decoding setting, with the trivial
    baseline's accuracy as a dashed line when given."""
    import matplotlib  # slow to import, and only the report's plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    markers = "osD^vP*Xh<>"
    for k, (name, (lat, acc)) in enumerate(points.items()):
        ax.scatter([lat], [acc * 100], marker=markers[k % len(markers)], s=50, label=name)
    if baseline_em is not None:
        ax.axhline(baseline_em * 100, color="grey", linestyle="--", linewidth=1, label="trivial baseline")
    ax.set(xlabel="mean wall time per task (s)", ylabel="exact match (%)", title="Accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fmt(x: Any, pct: bool = False) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        return f"{100 * x:.1f}" if pct else f"{x:.3g}"
    return str(x)


def summary_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table: one column per system."""
    rows = [
        ("tasks", "tasks", False),
        ("exact match (%)", "em", True),
        ("  95% CI, low (%)", "em_lo", True),
        ("  95% CI, high (%)", "em_hi", True),
        ("token F1 (%)", "f1", True),
        ("rounds, mean", "rounds_mean", False),
        ("rounds, median", "rounds_median", False),
        ("rounds, mean (correct only)", "rounds_mean_correct", False),
        ("tool calls, mean", "tool_calls_mean", False),
        ("invalid tool calls (% of actions)", "invalid_call_rate", True),
        ("out of context/token budget (% of tasks)", "out_of_budget_rate", True),
        ("NFE per task", "nfe_mean", False),
        ("tokens generated per task", "tokens_mean", False),
        ("tokens per forward pass", "tokens_per_nfe", False),
        ("forced tokens (% of generated, no pass)", "forced_share", True),
        ("wall time per task, mean (s)", "wall_mean", False),
        ("wall time per task, median (s)", "wall_median", False),
        ("  model time, mean (s)", "model_time_mean", False),
        ("  tool time, mean (s)", "tool_time_mean", False),
    ]
    names = list(summaries)
    out = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, pct in rows:
        out.append(f"| {label} | " + " | ".join(_fmt(summaries[n].get(key, float("nan")), pct) for n in names) + " |")
    kinds = sorted({k for s in summaries.values() for k in s.get("invalid_by_type", {})})
    for k in kinds:
        out.append(
            f"| invalid: {k} (% of actions) | "
            + " | ".join(_fmt(summaries[n].get("invalid_by_type", {}).get(k, 0.0), True) for n in names)
            + " |"
        )
    return "\n".join(out)


def _breakdown_table(systems: Mapping[str, Sequence[EpisodeRecord]],
                     baseline: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """EM by question type and hop count, one column per system (plus the trivial baseline's)."""
    keys = sorted({f"{k}={e['meta'][k]}" for eps in systems.values() for e in eps for k in ("type", "hops")})
    names = list(systems)
    head = [f"{n} EM (%)" for n in names] + (["trivial baseline EM (%)"] if baseline else [])
    out = ["| slice | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for key in keys:
        k, v = key.split("=")
        cells = []
        for n in names:
            sel = [e["em"] for e in systems[n] if str(e["meta"][k]) == v]
            cells.append(f"{100 * _mean(sel):.1f} (n={len(sel)})" if sel else "–")
        if baseline:
            cells.append(f"{100 * baseline[key]['em']:.1f}" if key in baseline else "–")
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _bases_section(bases: Mapping[str, Any]) -> list[str]:
    """How the two bases were made and the induction metric of each."""
    lines = ["## The bases and their induction metric", "", f"Recipe: **{bases.get('recipe', 'unknown')}**.", ""]
    metrics = {k: v for k, v in bases.items() if isinstance(v, Mapping)}
    if metrics:
        keys = sorted({m for v in metrics.values() for m in v})
        lines += ["| metric | " + " | ".join(f"{k.upper()} base" for k in metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        lines += [f"| {m} | " + " | ".join(_fmt(metrics[k].get(m, float("nan"))) for k in metrics) + " |"
                  for m in keys]
        lines += ["", "`ar_*`: teacher-forced next-token copy of held-out repeated spans (tokens 2..n) and the loss "
                  "on those tokens at their first and second occurrence; `diffusion_*`: the repeat after its first "
                  "token masked and decoded with the agent's block-diffusion settings; `*quoted_*`: repeats of a "
                  "span quoted in backticks, written in double quotes as a tool call copies a name, scored and "
                  "decoded from the opening quote (`first_acc`: the copy's first token).", ""]
    return lines


def write_report(out: Path, episodes: Mapping[str, Sequence[EpisodeRecord]], baseline: Mapping[str, Any],
                 cfg: Any, timings: Mapping[str, float], bases: Mapping[str, Any] | None = None) -> Path:
    """``out/report.md`` plus PNG plots, from the episode records of every run."""
    out = Path(out)
    main = {k: episodes[k] for k in ("AR", "DLLM", "DLLM unaligned") if k in episodes}
    sweep = {k: v for k, v in episodes.items() if k not in main}
    summaries = {k: summarize(v) for k, v in main.items()}
    sweep_summaries = {k: summarize(v) for k, v in sweep.items()}
    speed = paired_speedup(main["AR"], main["DLLM"]) if {"AR", "DLLM"} <= set(main) else None
    plot_latency(main, out / "latency.png")
    points = {k: (s["wall_mean"], s["em"]) for k, s in {**summaries, **sweep_summaries}.items()}
    plot_accuracy_latency(points, out / "accuracy_vs_latency.png", baseline.get("em"))
    ar, dl = summaries.get("AR"), summaries.get("DLLM")
    lines = [
        "# AR vs DLLM agents on DocQA (matched fine-tuning)",
        "",
        "Produced by `unimask compare` (config below). Every number is measured in this run; "
        "episode logs are in `episodes/`.",
        "",
        "## Main result",
        "",
        summary_table(summaries),
        "",
        f"Trivial baseline (answer without tools: most frequent training answer per question type) on the "
        f"same {baseline['n']} test tasks: EM {100 * baseline['em']:.1f}%, F1 {100 * baseline['f1']:.1f}%"
        + (f" (all {baseline['split']['n']} test tasks: EM {100 * baseline['split']['em']:.1f}%)."
           if "split" in baseline else "."),
        "",
    ]
    if speed and ar and dl:
        faster = "faster" if speed["speedup"] >= 1 else "slower"
        lines += [
            f"**End-to-end speed-up of DLLM over AR**: {speed['speedup']:.2f}x (95% paired bootstrap CI "
            f"{speed['lo']:.2f}-{speed['hi']:.2f}, {speed['tasks']} tasks): the DLLM agent is {faster} per task. "
            f"It generated {dl['tokens_per_nfe']:.2f} tokens per forward pass vs {ar['tokens_per_nfe']:.2f} for AR "
            f"({dl['nfe_mean']:.0f} vs {ar['nfe_mean']:.0f} forward passes per task, "
            f"{dl['rounds_mean']:.2f} vs {ar['rounds_mean']:.2f} rounds), and a pass cost "
            f"{1000 * dl['model_time_mean'] / max(dl['nfe_mean'], 1e-9):.2f} vs "
            f"{1000 * ar['model_time_mean'] / max(ar['nfe_mean'], 1e-9):.2f} ms of model time "
            "(in-run: the stages still running beside the agents load the machine; the interleaved "
            "`benchmarks/bench_agent_episodes.py` is the idle measurement). "
            f"Accuracy gap (AR - DLLM): {100 * (ar['em'] - dl['em']):+.1f} EM points.",
            "",
        ]
    lines += _bases_section(bases or {})
    lines += [
        "![latency](latency.png)",
        "",
        "## Aligned vs unaligned attention masks (DLLM)",
        "",
        "`DLLM` is fine-tuned with aligned masks (noised action blocks see only the clean context before "
        "them; no clean token sees a noised one); `DLLM unaligned` on the same data with actions noised in "
        "place under plain bidirectional attention, decoded bidirectionally (LLaDA-style, prefix/dual cache). "
        "See the main table above.",
        "",
        "## Decoding settings (DLLM) on a subset of the test tasks",
        "",
        summary_table(sweep_summaries) if sweep_summaries else "(not run)",
        "",
        "![accuracy vs latency](accuracy_vs_latency.png)",
        "",
        "## By question type and hop count",
        "",
        _breakdown_table(main, baseline.get("breakdown")),
        "",
        "## Run",
        "",
        "Stage wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
        "```json",
        json.dumps(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg), indent=2),
        "```",
        "",
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    atomic_write_text(out / "summary.json", json.dumps(
        {"main": summaries, "sweep": sweep_summaries, "speedup": speed, "baseline": dict(baseline),
         "bases": dict(bases or {}), "timings": dict(timings)}, indent=2, default=str))
    return path
