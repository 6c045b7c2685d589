"""CLI commands of unimask.train (mounted by unimask.cli): ``unimask train CONFIG [--a.b v ...]``.

Under ``torchrun --nproc_per_node N -m unimask train CONFIG`` the same command joins the
process group from torchrun's environment.
"""

from __future__ import annotations

from pathlib import Path

import typer

from unimask.cli_utils import OVERRIDES, console, friendly_errors, overrides_from


def train_command(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML/TOML train config (see configs/train/)."),
) -> None:
    """Train (or resume) a model; extra --section.key value pairs override the config."""
    with friendly_errors():
        from unimask.config import load_config
        from unimask.train.config import TrainConfig
        from unimask.train.trainer import train

        cfg = load_config(TrainConfig, config, overrides_from(ctx))
        result = train(cfg)
        import os

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


def register(root: typer.Typer) -> None:
    """Mount this package's commands on the root app."""
    root.command("train", context_settings=OVERRIDES)(train_command)
