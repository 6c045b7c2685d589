"""``unimask data prepare|stats|preview``."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.table import Table

from unimask.cli.common import OVERRIDES, config_and_overrides, console, friendly_errors
from unimask.cli.preview import render_preview
from unimask.config import load_config
from unimask.data import DataConfig, DataStats, prepare_data

app = typer.Typer(help="Prepare corpora, inspect them, preview objectives.", no_args_is_help=True)


@app.command("prepare", context_settings=OVERRIDES)
def prepare(
    ctx: typer.Context,
    config: Path = typer.Argument(None, help="data config (YAML/TOML); omit for the stdlib default"),
) -> None:
    """Read sources, dedup, split, train/load the tokenizer and write sharded token files."""
    with friendly_errors():
        config, overrides = config_and_overrides(ctx, config)
        out = prepare_data(load_config(DataConfig, config, overrides))
    console.print(f"[green]data ready:[/] {out}")


@app.command("stats")
def stats(directory: Path = typer.Argument(..., help="a prepared data dir"),
          verify: bool = typer.Option(False, help="re-check every shard's checksum")) -> None:
    """Documents, tokens and shards per split, and per-source counts."""
    with friendly_errors():
        s = DataStats.from_dir(directory, verify=verify)
    table = Table(title=f"{s.path} (vocab {s.vocab_size}, {s.dtype})")
    for col in ("split", "docs", "tokens", "shards", "mean doc tokens", "chars/token"):
        table.add_column(col, justify="right")
    for name, sp in s.splits.items():
        table.add_row(name, f"{sp.docs:,}", f"{sp.tokens:,}", str(sp.shards), f"{sp.mean_doc_tokens:.0f}",
                      f"{sp.chars_per_token:.2f}")
    console.print(table)
    for src in s.sources:
        console.print(f"  source {src}")
    if verify:
        console.print("[green]all shard checksums verified[/]")


@app.command("preview")
def preview(
    objective: str = typer.Option(..., help="objective name (see unimask.objectives.objective_names())"),
    data: Path = typer.Option(None, help="a prepared data dir (default: a built-in stdlib snippet)"),
    seq_len: int = typer.Option(48),
    seed: int = typer.Option(0),
    param: list[str] = typer.Option([], help="an objective parameter as KEY=VALUE (YAML value), repeatable: "
                                             "--param marked=1 --param repeats=2"),
) -> None:
    """Show one training example: what the model sees, what it attends to, what is scored."""
    with friendly_errors():
        params = {}
        for kv in param:
            key, sep, value = kv.partition("=")
            if not sep or not key:
                raise ValueError(f"--param takes KEY=VALUE, got {kv!r}")
            params[key] = yaml.safe_load(value)
        render_preview(objective, data, seq_len, seed, params=params)
