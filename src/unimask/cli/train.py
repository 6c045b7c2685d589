"""``unimask train CONFIG [--a.b v ...]``.

Under ``torchrun --nproc_per_node N -m unimask train CONFIG`` the same command joins the
process group from torchrun's environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from unimask.cli.common import console, friendly_errors, overrides_from
from unimask.config import load_config
from unimask.train.config import TrainConfig
from unimask.train.trainer import train


def train_command(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML/TOML train config (see configs/train/)."),
) -> None:
    """Train (or resume) a model; extra --section.key value pairs override the config."""
    with friendly_errors():
        cfg = load_config(TrainConfig, config, overrides_from(ctx))
        result = train(cfg)
        if result.interrupted:
            console.print(f"[yellow]interrupted[/] at step {result.step}; checkpoint {result.checkpoint} (rerun to resume)")
            raise typer.Exit(130)

        if os.environ.get("RANK", "0") == "0":
            ev = ", ".join(f"{k}={v:.4f}" for k, v in result.eval.items() if not k.endswith("_ppl"))
            console.print(
                f"[green]done[/] step {result.step}, {result.tokens:,} tokens, "
                f"last loss {result.losses[-1] if result.losses else float('nan'):.4f}"
                + (f", val {ev}" if ev else "")
                + (f"\ncheckpoint: {result.checkpoint}" if result.checkpoint else "")
            )
