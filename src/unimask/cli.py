"""The ``unimask`` command: a thin root that mounts each package's commands.

Each package owns ``<package>/cli.py`` with ``register(root)``; this module only assembles
them, so ``unimask --help`` lists every stage and no stage imports another's CLI.
Conventions follow torchrun/accelerate/lm-eval: ``unimask train CONFIG --model.n_layers 4``.
"""

from __future__ import annotations

import importlib

import typer

PACKAGES = [
    "unimask.tokenizer",
    "unimask.data",
    "unimask.model",
    "unimask.train",
    "unimask.sampling",
    "unimask.evals",
    "unimask.agent",
    "unimask.envs",
    "unimask.experiments",
    "unimask.serve",
]

app = typer.Typer(
    name="unimask",
    help="Train, sample and deploy AR and diffusion LMs for code and tool-using agents.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the unimask version."""
    from unimask import __version__

    typer.echo(__version__)


def _mount() -> None:
    for pkg in PACKAGES:
        importlib.import_module(f"{pkg}.cli").register(app)


def main() -> None:
    _mount()
    app()


if __name__ == "__main__":
    main()
