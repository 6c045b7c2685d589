"""``unimask eval humaneval|humaneval-infill|loss|sandbox-check``.

Settings not named as options are dotted overrides of the command's config dataclass, e.g.
``unimask eval humaneval CKPT --num-samples 20 --temperature 0.8 --decoding.steps 64``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

# Modules, not names: tests swap ``load_backbone`` and ``checkpoint_validation_loss`` on them.
from unimask import sampling as sampling_lib
from unimask.cli.common import OVERRIDES, console, friendly_errors, overrides_from
from unimask.config import load_config
from unimask.evals import loss as eval_loss
from unimask.evals.humaneval import HumanEvalConfig, run_humaneval
from unimask.evals.infill import InfillConfig, run_infill
from unimask.io import atomic_write_text
from unimask.sampling.options import check_options
from unimask.sandbox.check import run_checks

eval_app = typer.Typer(
    help="Evaluate checkpoints: HumanEval pass@k, HumanEval infilling, held-out loss.", no_args_is_help=True
)


def _backbone(checkpoint: str, device: str) -> Any:
    if not Path(checkpoint).exists():
        raise FileNotFoundError(
            f"checkpoint {checkpoint} does not exist (pass one of ours or a local HF directory)"
        )
    return sampling_lib.load_backbone(checkpoint, device=None if device == "auto" else device)


def _decoding(raw: dict[str, Any]) -> dict[str, Any]:
    """``--decoding.NAME VALUE`` options, YAML-parsed and checked against ``DecodingOptions``."""
    options = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in raw.items()}
    check_options(options)
    return options


class _Progress:
    """A rich progress bar fed by the runners' ``on_progress(done, total)``."""

    def __init__(self, label: str) -> None:
        self.progress = Progress(
            "[bold]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.label = label
        self.task = None

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        if self.task is None or self.progress.tasks[self.task].total != total:
            self.task = self.progress.add_task(self.label, total=total)
        self.progress.update(self.task, completed=done)


def _table(title: str, rows: list[tuple[str, dict]], keys: list[str]) -> None:
    table = Table(title=title)
    table.add_column("")
    for k in keys:
        table.add_column(k, justify="right")
    for name, s in rows:
        cells = []
        for k in keys:
            v = s.get(k)
            cells.append(
                "-"
                if v is None
                else f"{100 * v:.2f}"
                if k.startswith(("pass@", "exact"))
                else f"{v:.4g}"
                if isinstance(v, float)
                else str(v)
            )
        table.add_row(name, *cells)
    Console().print(table)


def humaneval_command(
    ctx: typer.Context,
    checkpoint: str = typer.Argument(..., help="our checkpoint dir or a local Hugging Face model dir"),
    output: Path = typer.Option(Path("eval_out/humaneval"), "--output", "-o", help="results dir (resumable)"),
    limit: int = typer.Option(None, "--limit", help="first N problems only"),
    config: Path = typer.Option(None, "--config", help="YAML/TOML with HumanEvalConfig keys"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """HumanEval pass@k: sample, run in the sandbox, score (completed samples are skipped)."""
    with friendly_errors():
        cfg = load_config(HumanEvalConfig, config, overrides_from(ctx))
        if limit is not None:
            cfg.limit = limit
        cfg.decoding = _decoding(cfg.decoding)
        backbone = _backbone(checkpoint, device)
        with _Progress("humaneval") as bar:
            summary = run_humaneval(backbone, output, cfg, on_progress=bar)
        keys = [k for k in summary if k.startswith("pass@")] + ["mean_nfe", "mean_gen_time"]
        _table(
            f"HumanEval ({summary['tasks']} problems, {summary['samples']} samples)",
            [(checkpoint, summary)],
            keys,
        )
        console.print(f"results: {output}/samples.jsonl, {output}/summary.json; status {summary['status']}")


def infill_command(
    ctx: typer.Context,
    checkpoint: str = typer.Argument(..., help="our checkpoint dir or a local Hugging Face model dir"),
    output: Path = typer.Option(Path("eval_out/humaneval-infill"), "--output", "-o", help="results dir"),
    limit: int = typer.Option(None, "--limit", help="first N problems only"),
    fmt: str = typer.Option("codegen2", "--format", help="codegen2 | fim | fim-spm | native"),
    modes: str = typer.Option("single-line,multi-line,random-span", "--modes"),
    config: Path = typer.Option(None, "--config", help="YAML/TOML with InfillConfig keys"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """HumanEval infilling (single-line, multi-line, random-span): pass@1 by execution and exact match."""
    with friendly_errors():
        cfg = load_config(InfillConfig, config, {"format": fmt, "modes": modes, **overrides_from(ctx)})
        if limit is not None:
            cfg.limit = limit
        cfg.decoding = _decoding(cfg.decoding)
        backbone = _backbone(checkpoint, device)
        with _Progress("humaneval-infill") as bar:
            summary = run_infill(backbone, output, cfg, on_progress=bar)
        rows = list(summary["modes"].items())
        _table(f"HumanEval infilling ({cfg.format})", rows, ["tasks", "pass@1", "exact_match", "mean_nfe"])
        console.print(f"results: {output}/<mode>/samples.jsonl, {output}/summary.json")


def loss_command(
    checkpoint: str = typer.Argument(..., help="our checkpoint dir"),
    data: Path = typer.Option(..., "--data", help="prepared data dir with a val split"),
    objectives: str = typer.Option("causal", "--objectives", help="comma-separated objective names"),
    seq_len: int = typer.Option(256, "--seq-len"),
    num_examples: int = typer.Option(64, "--num-examples"),
    batch_size: int = typer.Option(8, "--batch-size"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    output: Path = typer.Option(None, "--output", "-o", help="write the numbers to this JSON file"),
) -> None:
    """Held-out loss and perplexity per objective (same corruption every run)."""
    with friendly_errors():
        names = [o.strip() for o in objectives.split(",") if o.strip()]
        if not names:
            raise ValueError("--objectives is empty; name at least one objective, e.g. causal")
        res = eval_loss.checkpoint_validation_loss(
            checkpoint, data, names, seq_len, num_examples, batch_size, seed, device
        )
        _table(
            "held-out loss",
            [(n, {"loss": res.get(n), "ppl": res.get(f"{n}_ppl")}) for n in names],
            ["loss", "ppl"],
        )
        if output is not None:
            atomic_write_text(output, json.dumps(res, indent=2) + "\n")


def sandbox_check_command() -> None:
    """Report the sandbox's isolation layers on this machine and run a short hostile battery."""
    layers, results = run_checks()
    out = Console()
    out.print("isolation layers in force: " + ", ".join(layers))
    table = Table(title="sandbox hostile battery")
    for col in ("program", "contained", "detail"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, "[green]yes[/]" if r.contained else "[bold red]NO[/]", r.detail)
    out.print(table)
    if not all(r.contained for r in results):
        raise typer.Exit(1)


eval_app.command("humaneval", context_settings=OVERRIDES)(humaneval_command)
eval_app.command("humaneval-infill", context_settings=OVERRIDES)(infill_command)
eval_app.command("loss")(loss_command)
eval_app.command("sandbox-check")(sandbox_check_command)
