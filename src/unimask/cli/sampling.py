"""``unimask generate CKPT --prompt ...`` and ``unimask infill CKPT --prefix ... --suffix ...``."""

from __future__ import annotations

from pathlib import Path

import typer

from unimask.cli.common import console, friendly_errors
from unimask.sampling import infill as do_infill
from unimask.sampling import load_backbone


def generate(
    checkpoint: Path = typer.Argument(..., help="unimask checkpoint dir or a local Hugging Face model dir"),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="prompt text (repeat for a batch)"),
    max_new_tokens: int = typer.Option(64),
    temperature: float = typer.Option(0.0),
    top_p: float = typer.Option(1.0),
    threshold: float = typer.Option(None, help="diffusion: commit every token above this confidence"),
    steps: int = typer.Option(None, help="diffusion: denoising steps (default: one per token)"),
    stop: list[str] = typer.Option([], help="stop string (repeatable)"),
    seed: int = typer.Option(None),
    device: str = typer.Option("", help="cpu, cuda, ... (default: cuda if available)"),
) -> None:
    """Generate continuations with any backbone; prints text, NFE and time."""
    with friendly_errors():
        backbone = load_backbone(checkpoint, device=device or None)
        given = {k: v for k, v in {"threshold": threshold, "steps": steps, "seed": seed}.items() if v is not None}
        gens = backbone.generate(prompt, max_new_tokens=max_new_tokens, stop=stop, temperature=temperature,
                                 top_p=top_p, **given)
    for p, g in zip(prompt, gens, strict=True):
        console.rule(f"[dim]{backbone.kind} · NFE {g.nfe} · {g.wall_time:.2f}s · {g.stop_reason}[/]")
        typer.echo(p + g.text)


def infill(
    checkpoint: Path = typer.Argument(..., help="unimask checkpoint dir or a local Hugging Face model dir"),
    prefix: str = typer.Option(..., help="text before the hole"),
    suffix: str = typer.Option(..., help="text after the hole"),
    format: str = typer.Option("codegen2", help="codegen2 | fim_psm | fim_spm | native (diffusion)"),
    max_new_tokens: int = typer.Option(64),
    device: str = typer.Option(""),
) -> None:
    """Fill the middle between a prefix and a suffix; prints only the middle."""
    with friendly_errors():
        backbone = load_backbone(checkpoint, device=device or None)
        g = do_infill(backbone, prefix, suffix, format, max_new_tokens=max_new_tokens)
    console.rule(f"[dim]{format} · NFE {g.nfe} · {g.wall_time:.2f}s[/]")
    typer.echo(g.text)

