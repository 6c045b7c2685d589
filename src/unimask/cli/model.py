"""``unimask convert SRC DST [--arch A]``: Hugging Face directories in and out (``unimask.model.convert``)."""

from __future__ import annotations

from pathlib import Path

import typer

from unimask.cli.common import console, friendly_errors
from unimask.model.convert import convert


def convert_command(
    src: Path = typer.Argument(..., help="A Hugging Face model directory (import) or a unimask checkpoint (export)."),
    dst: Path = typer.Argument(..., help="Where to write the converted directory (atomically)."),
    arch: str = typer.Option(None, "--arch", help="Export family: llama, mistral, qwen2 or qwen3 for an AR "
                             "checkpoint; dream (shifted) or llada for a diffusion one (default: the family it was "
                             "imported from, else the one its options need)."),
) -> None:
    """Convert a Hugging Face directory into a unimask checkpoint, or a unimask checkpoint back."""
    with friendly_errors():
        if not src.exists():
            raise FileNotFoundError(f"{src} does not exist (no config.json)")
        out, direction = convert(src, dst, arch)
    what = "unimask checkpoint" if direction == "import" else "Hugging Face directory"
    console.print(f"[green]{direction}ed[/] {src} -> {what} {out}")
