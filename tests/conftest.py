"""Shared fixtures: a tiny tokenizer trained once per session on real stdlib text."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def stdlib_sample_texts(limit: int = 40) -> list[str]:
    """A deterministic handful of real stdlib source files (on every machine)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((root / "json").glob("*.py")) + sorted((root / "email").glob("*.py"))
    return [f.read_text(encoding="utf-8") for f in files[:limit]]


@pytest.fixture(scope="session")
def tiny_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unimask.tokenizer import train_tokenizer

    tok = train_tokenizer(stdlib_sample_texts(), vocab_size=512)
    return tok.save(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_path: Path):
    from unimask.tokenizer import Tokenizer

    return Tokenizer.load(tiny_tokenizer_path)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "smear"])
def any_model(request: pytest.FixtureRequest):
    """A tiny GQA model, plain and with a (randomised, so not a no-op) previous-token smear:
    tests of masks and caches run on both."""
    from unimask.model import Transformer
    from unimask.presets import model_preset

    torch.manual_seed(0)
    m = Transformer(model_preset("tiny", n_kv_heads=2, smear=request.param)).eval()
    if m.smear_gate is not None:
        torch.nn.init.normal_(m.smear_gate.weight, std=0.3)
    return m


@pytest.fixture(autouse=True, scope="session")
def _conversion_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hugging Face directories converted on load go to a temporary cache, never ~/.cache."""
    os.environ["UNIMASK_CACHE"] = str(tmp_path_factory.mktemp("unimask_cache"))
