"""``unimask tokenizer train [CONFIG] [--a.b v]``: the BPE tokenizer ``unimask data prepare`` would train."""

from __future__ import annotations

from pathlib import Path

import typer

from unimask.cli.common import OVERRIDES, config_and_overrides, console, friendly_errors
from unimask.config import load_config
from unimask.data import DataConfig, train_data_tokenizer

app = typer.Typer(help="Train and inspect tokenizers.", no_args_is_help=True)


@app.command("train", context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    config: Path = typer.Argument(None, help="data config (YAML/TOML); omit for the stdlib default"),
    out: Path = typer.Option(Path("tokenizer.json"), help="where to write tokenizer.json"),
) -> None:
    """Train a byte-level BPE tokenizer (with every unimask special token) on the configured sources."""
    with friendly_errors():
        config, overrides = config_and_overrides(ctx, config)
        tok = train_data_tokenizer(load_config(DataConfig, config, overrides))
        path = tok.save(out)
    console.print(f"wrote {path} (vocab {tok.vocab_size})")
