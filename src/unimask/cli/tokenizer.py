"""``unimask tokenizer train [CONFIG] [--a.b v]``: BPE on a data config's source mixture."""

from __future__ import annotations

from pathlib import Path

import typer

from unimask.cli.common import OVERRIDES, config_and_overrides, console, friendly_errors
from unimask.config import load_config
from unimask.data import DataConfig
from unimask.data.sources import SourceCounts, iter_source
from unimask.tokenizer import train_tokenizer

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
        cfg = load_config(DataConfig, config, overrides)
        budget = cfg.tokenizer.max_train_chars

        def texts():
            used = 0
            for src in cfg.sources:
                for doc in iter_source(src, SourceCounts(), cfg.max_docs):
                    if budget is not None and used >= budget:
                        return
                    used += len(doc.text)
                    yield doc.text

        tok = train_tokenizer(texts(), vocab_size=cfg.tokenizer.vocab_size, min_frequency=cfg.tokenizer.min_frequency)
        path = tok.save(out)
    console.print(f"wrote {path} (vocab {tok.vocab_size})")
