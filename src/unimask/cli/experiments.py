"""``unimask compare [CONFIG] [--key value ...]`` -- the matched AR-vs-DLLM agent comparison."""

from __future__ import annotations

from pathlib import Path

import typer

from unimask.cli.common import config_and_overrides, friendly_errors
from unimask.config import load_config
from unimask.experiments.compare import CompareConfig, run_compare


def compare(
    ctx: typer.Context,
    config: Path = typer.Argument(None, help="YAML/TOML CompareConfig; omit for the embedded CPU default"),
) -> None:
    """Pre-train AR and DLLM, fine-tune both on the same DocQA trajectories, compare the agents."""
    with friendly_errors():
        config, overrides = config_and_overrides(ctx, config)
        cfg = load_config(CompareConfig, config, overrides)
    run_compare(cfg)

