"""The package layers of docs/design.md hold: no upward import, no package cycle (import-linter)."""

from __future__ import annotations

import sys
from pathlib import Path

from importlinter.cli import lint_imports

import unimask

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def _contract() -> dict:
    (contract,) = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    return contract


def test_every_package_has_a_layer() -> None:
    """A new package must be placed in the contract, or import-linter would not check it."""
    named = {p.strip() for layer in _contract()["layers"] for p in layer.split("|")}
    src = Path(unimask.__file__).parent
    packages = {p.stem for p in src.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem[0] != "_")}
    assert packages == named


def test_imports_follow_the_layers() -> None:
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0, (
        "an import goes up a layer or between independent packages; see the report above and "
        "[tool.importlinter] in pyproject.toml"
    )
