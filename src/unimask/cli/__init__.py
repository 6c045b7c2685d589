"""The ``unimask`` command: the one CLI floor.

Every command lives in this package, one module per area, and ``COMMANDS`` / ``GROUPS`` below
are the one table of them; this is the only layer that may import every other (see the
``[tool.importlinter]`` contract in pyproject.toml). Library code never prints here: it logs
(``logging``) or takes a progress callback, and ``main`` routes the log to the console.
Conventions follow torchrun/accelerate/lm-eval: ``unimask train CONFIG --model.n_layers 4``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import typer
from rich.logging import RichHandler

from unimask import __version__
from unimask.cli import agent, data, envs, evals, experiments, model, sampling, serve, tokenizer, train
from unimask.cli.common import OVERRIDES, console

app = typer.Typer(
    name="unimask",
    help="Train, sample and deploy AR and diffusion LMs for code and tool-using agents.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def version() -> None:
    """Print the unimask version."""
    typer.echo(__version__)


# name -> (command function, click context settings); listed in ``unimask --help`` in this order.
COMMANDS: dict[str, tuple[Callable[..., Any], dict[str, bool]]] = {
    "version": (version, {}),
    "train": (train.train_command, OVERRIDES),
    "generate": (sampling.generate, {}),
    "infill": (sampling.infill, {}),
    "compare": (experiments.compare, OVERRIDES),
    "serve": (serve.serve, {}),
    "convert": (model.convert_command, {}),
}
GROUPS: dict[str, typer.Typer] = {
    "tokenizer": tokenizer.app,
    "data": data.app,
    "eval": evals.eval_app,
    "agent": agent.app,
    "env": envs.env_app,
}

for _name, (_fn, _settings) in COMMANDS.items():
    app.command(_name, context_settings=_settings or None)(_fn)
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)


def _mount() -> None:
    """Kept for callers that mounted the commands explicitly; the table above is mounted on import."""


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[
        RichHandler(console=console, markup=True, show_time=False, show_level=False, show_path=False)
    ])
    app()


if __name__ == "__main__":
    main()
