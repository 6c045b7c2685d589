"""Raw-example sources for the trainer, each resumable through ``state_dict``/``load_state_dict``.

* ``PackedSource``: fixed-length token windows from a prepared data dir (``unimask.data.PackedLoader``).
* ``TrajectorySource``: agent trajectories from JSONL (``{"turns": [{"role", "content"}, ...]}`` per
  line), rendered with ``unimask.tokenizer.chat.render_turns`` -- the agent SFT input.

Both yield raw objects the objectives consume (``PackedWindow`` / ``TurnSequence``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from unimask.data import PackedLoader
from unimask.tokenizer import Tokenizer
from unimask.tokenizer.chat import Turn, TurnSequence, render_turns


class RawSource(Protocol):
    def __iter__(self) -> Iterator[Any]: ...
    def __next__(self) -> Any: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PackedSource:
    """Windows of ``seq_len`` tokens from ``unimask.data.PackedLoader`` (infinite for training)."""

    def __init__(
        self, data_dir: str | Path, split: str, seq_len: int, rank: int = 0, world_size: int = 1,
        seed: int = 0, epochs: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"rank": rank, "world_size": world_size, "seed": seed}
        if epochs is not None:
            kwargs.update(epochs=epochs, shuffle=False)
        self.loader = PackedLoader(data_dir, split, seq_len, **kwargs)
        self._it: Iterator[Any] | None = None

    def __iter__(self) -> PackedSource:
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self._it = iter(self.loader)
        return next(self._it)

    def state_dict(self) -> dict[str, Any]:
        return {"loader": self.loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state["loader"])
        self._it = None


def read_trajectories(path: str | Path) -> list[list[Turn]]:
    """Parse a trajectory JSONL file; a malformed line raises naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: {path} (expected JSONL with a 'turns' list per line)")
    out: list[list[Turn]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                turns = [Turn.from_dict(t) for t in record["turns"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{path}:{lineno}: not a trajectory ({e}); each line must be "
                    '{"turns": [{"role": "system|user|assistant|tool", "content": "..."}, ...]}'
                ) from None
            if not any(t.is_action for t in turns):
                raise ValueError(f"{path}:{lineno}: trajectory has no assistant turn, so nothing to train on")
            out.append(turns)
    if not out:
        raise ValueError(f"{path} holds no trajectories")
    return out


class TrajectorySource:
    """Rendered trajectories, reshuffled each epoch from ``seed``; the cursor is (epoch, index).

    Trajectories longer than ``max_len`` tokens are cut to their first ``max_len`` tokens.
    ``epochs=None`` repeats forever (training); ``epochs=1`` is one ordered pass (validation).
    """

    def __init__(
        self, path: str | Path, tokenizer: Tokenizer, max_len: int, seed: int = 0, epochs: int | None = None,
        rank: int = 0, world_size: int = 1,
    ) -> None:
        self.sequences = [render_turns(t, tokenizer) for t in read_trajectories(path)]
        self.max_len, self.seed, self.epochs = max_len, seed, epochs
        self.rank, self.world_size = rank, world_size
        self.epoch, self.index = 0, 0

    def _order(self) -> np.ndarray:
        n = len(self.sequences)
        order = np.arange(n) if self.epochs is not None else np.random.default_rng([self.seed, self.epoch]).permutation(n)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> TrajectorySource:
        return self

    def __next__(self) -> TurnSequence:
        order = self._order()
        if self.index >= len(order):
            self.epoch, self.index = self.epoch + 1, 0
            if self.epochs is not None and self.epoch >= self.epochs:
                raise StopIteration
            order = self._order()
            if len(order) == 0:
                raise ValueError(f"rank {self.rank} has no trajectories: use fewer ranks or sharding=global")
        seq = self.sequences[int(order[self.index])]
        self.index += 1
        n = self.max_len
        return TurnSequence(seq.token_ids[:n], seq.turn_ids[:n], seq.is_action[:n])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "n": len(self.sequences)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("n") != len(self.sequences):
            raise ValueError(
                f"trajectory file changed since the checkpoint ({state.get('n')} -> {len(self.sequences)} lines); "
                "resume with the same file or start a fresh out_dir"
            )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
