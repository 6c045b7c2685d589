"""``unimask agent run --backbone CKPT --env NAME --split test``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from unimask.agent import LoopConfig, run_episodes
from unimask.cli.common import console, friendly_errors
from unimask.envs import get_environment
from unimask.experiments.report import summarize
from unimask.io import atomic_write_text
from unimask.sampling import load_backbone

app = typer.Typer(help="Run agents with real tools.", no_args_is_help=True)


@app.command("run")
def run(
    backbone: Path = typer.Option(..., help="unimask checkpoint or local Hugging Face dir"),
    env: str = typer.Option("docqa", help="environment name"),
    split: str = typer.Option("test"),
    limit: int = typer.Option(0, help="first N tasks only (0 = all)"),
    output: Path = typer.Option(Path("runs/agent"), help="directory for episodes.jsonl and summary.json"),
    max_rounds: int = typer.Option(15),
    max_new_tokens: int = typer.Option(64),
    max_context_tokens: int = typer.Option(1024),
    constrained: bool = typer.Option(False, help="schema-constrained tool calls"),
    threshold: float = typer.Option(None, help="diffusion confidence threshold"),
    device: str = typer.Option(""),
) -> None:
    """Run the agent loop on an environment's tasks; writes logs and prints a summary table."""
    with friendly_errors():
        environment = get_environment(env)
        tasks = environment.tasks(split)[: limit or None]
        model = load_backbone(backbone, device=device or None,
                              **({"threshold": threshold} if threshold is not None else {}))
        output.mkdir(parents=True, exist_ok=True)
        log = output / "episodes.jsonl"
        log.unlink(missing_ok=True)
        cfg = LoopConfig(max_rounds=max_rounds, max_new_tokens=max_new_tokens,
                         max_context_tokens=max_context_tokens, constrained=constrained)
        records = run_episodes(environment, tasks, model, cfg, log_path=log)
    summary = summarize(records)
    atomic_write_text(output / "summary.json", json.dumps(summary, indent=2))
    table = Table(title=f"{env}/{split} · {model.kind} · {len(records)} tasks")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        if not isinstance(v, dict):
            table.add_row(k, f"{v:.3g}" if isinstance(v, float) else str(v))
    console.print(table)
    console.print(f"episodes: {log}")

