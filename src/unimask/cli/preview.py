"""``unimask data preview``: a coloured terminal view of one training example.

Shows what the model sees (masks and sentinels highlighted, noisy copies marked), what is
scored (the target under each scored position) and, for short examples, who attends to whom.
"""

from __future__ import annotations

import inspect
import json
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from unimask.agent.protocol import format_action
from unimask.data import PackedLoader
from unimask.objectives import build_objective
from unimask.objectives.example import IGNORE
from unimask.tokenizer import Tokenizer, train_tokenizer
from unimask.tokenizer.chat import Turn, render_turns


def _snippet_window(tok, seq_len: int):
    """A stand-in for ``unimask.objectives.base.Window``: one document, ``json.dumps``'s source."""
    src = inspect.getsource(json.dumps)
    ids = tok.encode(src)[: seq_len - 1] + [tok.eos_id]

    class W:
        tokens = torch.tensor(ids)
        doc_ids = torch.zeros(len(ids), dtype=torch.long)

    return W()


def _snippet_trajectory(tok):
    return render_turns([
        Turn("user", "Default of indent in json.dumps?"),
        Turn("assistant", format_action("open", {"doc_id": "json.dumps"}, "open it")),
        Turn("tool", "json.dumps(obj, *, indent=None)"),
        Turn("assistant", format_action("answer", {"text": "None"})),
    ], tok)


def render_preview(name: str, data: Path | None, seq_len: int, seed: int, console: Console | None = None,
                   params: dict[str, Any] | None = None) -> None:
    console, params = console or Console(), params or {}
    rng = np.random.default_rng(seed)
    if data is not None:
        tok = Tokenizer.load(data)
        raw = next(iter(PackedLoader(data, "val", seq_len, seed=seed)))
    else:
        files = sorted((Path(sysconfig.get_paths()["stdlib"]) / "json").glob("*.py"))
        tok = train_tokenizer([f.read_text() for f in files], vocab_size=600)
        raw = _snippet_window(tok, seq_len)
    objective = build_objective(name, tok, **params)
    if hasattr(objective, "block_size") and "block_size" not in params:  # short blocks: a short preview shows several
        objective = build_objective(name, tok, **params, block_size=8)
    if objective.reads == "trajectory":
        raw = _snippet_trajectory(tok)
    ex = objective(raw, rng)
    special = tok.special_ids
    seen = Text()
    scored = Text()
    for i, t in enumerate(ex.input_ids.tolist()):
        piece = tok.decode([t]).replace("\n", "⏎")
        style = "bold magenta" if t == tok.mask_id else "bold cyan" if t in special else ""
        if bool(ex.noisy[i]):
            style += " underline"
        seen.append(piece, style=style or None)
        label = int(ex.labels[i])
        scored.append(tok.decode([label]).replace("\n", "⏎") if label != IGNORE else "·" * max(1, len(piece)),
                      style="green" if label != IGNORE else "dim")
    console.rule(f"[bold]{name}[/] — {len(ex)} tokens, {int((ex.labels != IGNORE).sum())} scored")
    console.print("[bold]model sees[/] (specials cyan, masks magenta, noisy copy underlined):")
    console.print(seen)
    console.print("[bold]scored targets[/] (green; · = not scored):")
    console.print(scored)
    mask = ex.attention.dense_mask()[0, 0]
    n = min(len(ex), 40)
    grid = Table(show_header=False, box=None, padding=0)
    for _ in range(n):
        grid.add_column(width=1)
    for q in range(n):
        grid.add_row(*["█" if bool(mask[q, k]) else "·" for k in range(n)])
    console.print(f"[bold]attention[/] (row = query, column = key; first {n} tokens):")
    console.print(grid)
