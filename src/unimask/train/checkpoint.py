"""Training checkpoints: atomic ``step_NNNNNNNN`` dirs under ``out_dir/checkpoints``, keep-last-K.

A checkpoint dir is a model checkpoint (``unimask.model.save_checkpoint``: weights, config,
tokenizer, ``extra`` with the train config and backbone) plus ``trainer_state.pt`` (optimizer,
step, tokens, per-rank data cursors and RNG states). It is assembled in a temporary sibling and
renamed into place, so a kill at any moment leaves the previous checkpoints intact; old ones are
first renamed away, then deleted.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unimask.io import atomic_dir, atomic_path
from unimask.model import save_checkpoint

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1][1] if ckpts else None


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_training_checkpoint(
    out_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    tokenizer: Any,
    extra: dict[str, Any],
    state: dict[str, Any],
    keep_last_k: int,
) -> Path:
    """Write ``step_{step}`` atomically (model + trainer state), then prune to the newest ``keep_last_k``."""
    final = checkpoint_root(out_dir) / f"step_{step:08d}"
    with atomic_dir(final) as tmp:
        # save_checkpoint writes its own dir atomically; pointing it at our (empty) temp dir
        # replaces that dir, and the whole thing only becomes ``final`` when this block exits.
        save_checkpoint(tmp, model, tokenizer, extra=extra)
        write_state(tmp / STATE_FILE, state)
    _prune(out_dir, keep_last_k)
    return final


def _prune(out_dir: str | Path, keep_last_k: int) -> None:
    ckpts = list_checkpoints(out_dir)
    for _, path in ckpts[: max(0, len(ckpts) - keep_last_k)]:
        trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    root = checkpoint_root(out_dir)
    for p in root.glob(".trash-*"):
        shutil.rmtree(p, ignore_errors=True)


def clean_stale_temporaries(out_dir: str | Path) -> None:
    """Remove temp dirs a killed save left behind (never touches complete checkpoints)."""
    root = checkpoint_root(out_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and (p.name.endswith(".tmp") or ".old-" in p.name or p.name.startswith(".trash-")):
                shutil.rmtree(p, ignore_errors=True)


def load_state(ckpt_dir: str | Path) -> dict[str, Any]:
    return torch.load(Path(ckpt_dir) / STATE_FILE, map_location="cpu", weights_only=False)
