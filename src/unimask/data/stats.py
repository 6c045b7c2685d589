"""``DataStats``: what a prepared data directory holds (``unimask data stats DIR``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table

from unimask.data.store import DataDir


@dataclass
class SplitStats:
    docs: int
    tokens: int
    shards: int
    chars: int
    mean_doc_tokens: float
    median_doc_tokens: float
    max_doc_tokens: int
    chars_per_token: float


@dataclass
class DataStats:
    path: str
    vocab_size: int
    dtype: str
    tokenizer_sha256: str
    splits: dict[str, SplitStats] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    verified: bool = False

    @classmethod
    def from_dir(cls, path: str | Path, verify: bool = False) -> DataStats:
        """Read (and with ``verify``, checksum) a data dir; raises ``DataError`` if it is damaged."""
        data = DataDir(path)
        if verify:
            data.verify()
        splits = {}
        for name, meta in data.meta["splits"].items():
            lengths = np.concatenate([np.diff(s.offsets) for s in data.shards(name)] or [np.zeros(0, np.int64)])
            tokens = int(lengths.sum())
            splits[name] = SplitStats(
                docs=int(len(lengths)),
                tokens=tokens,
                shards=len(meta["shards"]),
                chars=int(meta.get("chars", 0)),
                mean_doc_tokens=float(lengths.mean()) if len(lengths) else 0.0,
                median_doc_tokens=float(np.median(lengths)) if len(lengths) else 0.0,
                max_doc_tokens=int(lengths.max()) if len(lengths) else 0,
                chars_per_token=meta.get("chars", 0) / tokens if tokens else 0.0,
            )
        return cls(
            path=str(data.path), vocab_size=data.vocab_size, dtype=data.dtype.name,
            tokenizer_sha256=data.meta["tokenizer_sha256"], splits=splits, sources=data.meta["sources"],
            verified=verify,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> Any:
        """A rich renderable: one table per splits and sources."""
        head = Table(title=f"{self.path}  vocab {self.vocab_size}  {self.dtype}  tokenizer {self.tokenizer_sha256[:12]}"
                     + ("  checksums OK" if self.verified else ""))
        for col in ("split", "docs", "tokens", "shards", "mean doc", "median doc", "max doc", "chars/token"):
            head.add_column(col, justify="right")
        for name, s in self.splits.items():
            head.add_row(name, f"{s.docs:,}", f"{s.tokens:,}", str(s.shards), f"{s.mean_doc_tokens:.0f}",
                         f"{s.median_doc_tokens:.0f}", f"{s.max_doc_tokens:,}", f"{s.chars_per_token:.2f}")
        src = Table(title="sources")
        cols = ("name", "kind", "weight", "read", "kept", "duplicates", "non-UTF-8", "empty", "train tokens", "val tokens")
        for col in cols:
            src.add_column(col, justify="right")
        for r in self.sources:
            src.add_row(r["name"], r["kind"], f"{r['weight']:g}", f"{r['docs_read']:,}", f"{r['docs_kept']:,}",
                        f"{r['duplicates']:,}", f"{r['non_utf8_skipped']:,}", f"{r['empty_skipped']:,}",
                        f"{r.get('train_tokens', 0):,}", f"{r.get('val_tokens', 0):,}")
        return Group(head, src)
