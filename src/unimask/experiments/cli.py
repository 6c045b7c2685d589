"""CLI commands of unimask.experiments (mounted by unimask.cli)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Mount this package's commands on the root app."""
