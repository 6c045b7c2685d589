"""Shared CLI plumbing: the console, extra ``--dotted.key value`` overrides, friendly error exits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

from unimask.config import ConfigError, parse_overrides
from unimask.sampling.options import UnknownOptionError

console = Console(stderr=True)

# Pass to ``@app.command(context_settings=OVERRIDES)`` to accept ``--a.b value`` after positionals.
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


def overrides_from(ctx: typer.Context) -> dict[str, str]:
    return parse_overrides(ctx.args)


def config_and_overrides(ctx: typer.Context, config: Path | None) -> tuple[Path | None, dict[str, str]]:
    """For commands with an optional CONFIG: with no CONFIG, click takes the first ``--key`` for it."""
    args = list(ctx.args)
    if config is not None and str(config).startswith("--"):
        args.insert(0, str(config))
        config = None
    return config, parse_overrides(args)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn expected user errors (bad config, missing files, bad data) into a red line and exit 2."""
    try:
        yield
    except (ConfigError, FileNotFoundError, ValueError, UnknownOptionError) as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
