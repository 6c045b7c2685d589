"""CLI commands of unimask.train (mounted by unimask.cli)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Mount this package's commands on the root app."""
