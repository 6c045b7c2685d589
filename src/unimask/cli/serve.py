"""``unimask serve CKPT`` -- an OpenAI-compatible HTTP server for any backbone."""

from __future__ import annotations

import os
from pathlib import Path

import typer
import uvicorn

from unimask.cli.common import console, friendly_errors
from unimask.sampling import load_backbone
from unimask.serve.app import ServeConfig, create_app


def serve(
    checkpoint: Path = typer.Argument(..., help="unimask checkpoint dir or a local Hugging Face model dir"),
    host: str = typer.Option("127.0.0.1", help="interface to bind (127.0.0.1 keeps it local)"),
    port: int = typer.Option(8000),
    model_name: str = typer.Option("", help="model id clients send (default: the checkpoint dir name)"),
    api_key: str = typer.Option("", envvar="UNIMASK_API_KEY", help="require 'Authorization: Bearer KEY'"),
    max_tokens_limit: int = typer.Option(512, help="largest max_tokens a request may ask for"),
    max_batch: int = typer.Option(8, help="most concurrent requests generated in one batch"),
    device: str = typer.Option("", help="cpu, cuda, cuda:1 ... (default: cuda if available)"),
) -> None:
    """Serve /v1/models, /v1/completions and /v1/chat/completions (tools, streaming)."""
    with friendly_errors():
        backbone = load_backbone(checkpoint, device=device or None)
    cfg = ServeConfig(
        model_name=model_name or checkpoint.resolve().name,
        api_key=api_key or os.environ.get("UNIMASK_API_KEY") or None,
        max_tokens_limit=max_tokens_limit,
        max_batch=max_batch,
    )
    console.print(f"serving [bold]{cfg.model_name}[/] ({backbone.kind}) on http://{host}:{port}/v1")
    uvicorn.run(create_app(backbone, cfg), host=host, port=port, log_level="info")

