"""``PackedLoader``: fixed-length windows of EOS-separated documents, resumable and rank-sharded.

Each rank concatenates its documents (every one ends with ``<|endoftext|>``) in an order that
is reshuffled every epoch from ``(seed, epoch)``, and cuts the stream into windows of
``seq_len`` tokens. A window never drops or repeats a token: a document that does not fit
continues in the next window, and the stream runs on into the next epoch. ``doc_ids`` numbers
the documents inside a window (0, 0, 0, 1, 1, 2, ...) so objectives can keep attention and
corruption inside document boundaries (CodeGen2 splits spans at them).

Ranks: with at least ``world_size`` shards, rank ``r`` reads shards ``r, r + world_size, ...``;
with fewer shards, documents are dealt round-robin over ranks. Either way the ranks' data are
disjoint and together cover the split.

Resume: ``state_dict()`` is the position after the last window handed out; a loader given it
with ``load_state_dict()`` continues with exactly the next token. One iterator per loader:
``iter(loader)`` continues from the loader's position (a finished finite loader starts over).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unimask.data.sources import DataError
from unimask.data.store import DataDir


@dataclass
class PackedWindow:
    """One training sequence: ``tokens[L]`` and ``doc_ids[L]`` (document number inside the window).

    ``starts_mid_doc`` is true when the first document began in an earlier window; padded
    positions of a last partial window (only with ``drop_last=False``) have ``doc_ids == -1``
    and ``n_valid`` counts the real tokens.
    """

    tokens: torch.Tensor
    doc_ids: torch.Tensor
    starts_mid_doc: bool = False
    epoch: int = 0
    n_valid: int = -1

    def __post_init__(self) -> None:
        if self.n_valid < 0:
            self.n_valid = int(self.tokens.shape[0])


class PackedLoader:
    """Iterable of ``PackedWindow``; infinite over epochs unless ``epochs`` is given (e.g. 1 for eval)."""

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        epochs: int | None = None,
        drop_last: bool = True,
    ) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be >= 1 or None (infinite), got {epochs}")
        self.data = DataDir(data_dir)
        self.split, self.seq_len, self.rank, self.world_size = split, seq_len, rank, world_size
        self.seed, self.shuffle, self.epochs, self.drop_last = seed, shuffle, epochs, drop_last
        self.eos_id, self.pad_id = self.data.eos_id, self.data.pad_id
        self.shards = self.data.shards(split)
        self.unit_shard, self.unit_doc = self._units()
        if len(self.unit_doc) == 0:
            n = sum(s.n_docs for s in self.shards)
            raise DataError(
                f"split {split!r} of {self.data.path} gives rank {rank} of {world_size} no documents ({n} in the split); "
                "use fewer ranks, prepare more data, or raise val_fraction for the val split"
            )
        self._lengths = np.array(
            [self.shards[s].offsets[d + 1] - self.shards[s].offsets[d] for s, d in zip(self.unit_shard, self.unit_doc, strict=True)],
            dtype=np.int64,
        )
        self._state = {"epoch": 0, "pos": 0, "offset": 0, "windows": 0}
        self._order_cache: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------------ data layout
    def _units(self) -> tuple[np.ndarray, np.ndarray]:
        """(shard, doc) pairs this rank reads, in on-disk order."""
        n = len(self.shards)
        if n >= self.world_size:
            mine = range(self.rank, n, self.world_size)
            shard = [np.full(self.shards[i].n_docs, i, dtype=np.int64) for i in mine]
            doc = [np.arange(self.shards[i].n_docs, dtype=np.int64) for i in mine]
        else:
            shard = [np.full(s.n_docs, i, dtype=np.int64) for i, s in enumerate(self.shards)]
            doc = [np.arange(s.n_docs, dtype=np.int64) for s in self.shards]
        shard_a = np.concatenate(shard) if shard else np.zeros(0, np.int64)
        doc_a = np.concatenate(doc) if doc else np.zeros(0, np.int64)
        if n < self.world_size:
            shard_a, doc_a = shard_a[self.rank :: self.world_size], doc_a[self.rank :: self.world_size]
        return shard_a, doc_a

    @property
    def num_tokens(self) -> int:
        """Tokens this rank reads per epoch (EOS separators included)."""
        return int(self._lengths.sum())

    def __len__(self) -> int:
        """Windows per epoch: the exact count for ``epochs=1``; the stream spans epochs otherwise."""
        n, rem = divmod(self.num_tokens * (self.epochs or 1), self.seq_len)
        return n + (rem > 0 and not self.drop_last)

    def _order(self, epoch: int) -> np.ndarray:
        if self._order_cache is None or self._order_cache[0] != epoch:
            n = len(self.unit_doc)
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def _doc(self, unit: int) -> np.ndarray:
        shard = self.shards[self.unit_shard[unit]]
        d = self.unit_doc[unit]
        return shard.tokens[shard.offsets[d] : shard.offsets[d + 1]]

    # ------------------------------------------------------------------ iteration
    def _finished(self) -> bool:
        return self.epochs is not None and self._state["epoch"] >= self.epochs

    def __iter__(self) -> Iterator[PackedWindow]:
        if self._finished():
            self._state = {"epoch": 0, "pos": 0, "offset": 0, "windows": 0}
        return self._windows()

    def _windows(self) -> Iterator[PackedWindow]:
        L = self.seq_len
        n_units = len(self.unit_doc)
        while not self._finished():
            epoch, pos, offset = self._state["epoch"], self._state["pos"], self._state["offset"]
            tokens = np.full(L, self.pad_id, dtype=np.int64)
            doc_ids = np.full(L, -1, dtype=np.int64)
            starts_mid, first_epoch = offset > 0, epoch
            fill = doc_no = 0
            while fill < L:
                if self.epochs is not None and epoch >= self.epochs:
                    break
                order = self._order(epoch)
                doc = self._doc(order[pos])
                take = min(L - fill, len(doc) - offset)
                tokens[fill : fill + take] = doc[offset : offset + take]
                doc_ids[fill : fill + take] = doc_no
                fill += take
                offset += take
                if offset == len(doc):
                    pos, offset, doc_no = pos + 1, 0, doc_no + 1
                    if pos == n_units:
                        epoch, pos = epoch + 1, 0
            if fill < L and (self.drop_last or fill == 0):
                self._state = {"epoch": epoch, "pos": pos, "offset": offset, "windows": self._state["windows"]}
                return
            self._state = {"epoch": epoch, "pos": pos, "offset": offset, "windows": self._state["windows"] + 1}
            yield PackedWindow(torch.from_numpy(tokens), torch.from_numpy(doc_ids), starts_mid, first_epoch, fill)

    # ------------------------------------------------------------------ resume
    def _identity(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "seq_len": self.seq_len,
            "rank": self.rank,
            "world_size": self.world_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "data": self.data.meta["tokenizer_sha256"][:16] + f":{self.num_tokens}",
        }

    def state_dict(self) -> dict[str, Any]:
        """The position after the last window handed out (plain ints and strings)."""
        return {**self._identity(), **self._state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; it must come from a loader over the same data, split and layout."""
        ident = self._identity()
        wrong = {k: (state.get(k), v) for k, v in ident.items() if state.get(k) != v}
        if wrong:
            detail = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in wrong.items())
            raise ValueError(f"cannot resume PackedLoader: the saved state is for different data or layout ({detail})")
        pos, offset = int(state["pos"]), int(state["offset"])
        if not (0 <= pos < len(self.unit_doc)) or offset < 0:
            raise ValueError(f"cannot resume PackedLoader: position pos={pos}, offset={offset} is out of range")
        self._state = {"epoch": int(state["epoch"]), "pos": pos, "offset": offset, "windows": int(state["windows"])}


def read_documents(data_dir: str | Path, split: str) -> Iterator[list[int]]:
    """Token ids of every whole document of ``split`` (without its trailing EOS), in on-disk order."""
    for shard in DataDir(data_dir).shards(split):
        off = shard.offsets
        for d in range(shard.n_docs):
            yield shard.tokens[off[d] : off[d + 1] - 1].tolist()
