"""``prepare_data``: sources -> dedup -> split -> mixture -> tokenizer -> sharded token files.

Output (one self-contained directory, written into a temporary sibling and renamed into
place, so a crash never leaves a half-written data dir)::

    out_dir/tokenizer.json
    out_dir/meta.json                     counts per source, dtype, shards with sizes and sha256
    out_dir/{train,val}/shard_00000.bin   token ids (uint16 if the vocab fits, else uint32);
                                          every document is followed by one <|endoftext|>
    out_dir/{train,val}/shard_00000.idx   int64 offsets of the documents in the shard (n_docs + 1)

Order independence: a document's split is a salted hash of its content and the on-disk order
is sorted by that hash, so reordering input files changes nothing in the output.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from tokenizers import Tokenizer as HFTokenizer

from unimask.data.config import DataConfig
from unimask.data.sources import DataError, SourceCounts, iter_source
from unimask.io import atomic_dir
from unimask.tokenizer import Tokenizer, train_tokenizer

FORMAT_VERSION = 1
META_FILE = "meta.json"
SPLITS = ("train", "val")


@dataclass
class _Doc:
    key: bytes  # salted content hash + copy number: the on-disk order
    text: str
    source: int


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _unit(digest: bytes) -> float:
    """A uniform number in [0, 1) from hash bytes."""
    return int.from_bytes(digest[:8], "big") / 2**64


def _select(cfg: DataConfig) -> tuple[dict[str, list[_Doc]], list[dict[str, Any]]]:
    """Read every source; dedup, split and weight documents. Returns docs per split and counts per source."""
    seen: set[bytes] = set()
    salt = str(cfg.seed).encode()
    splits: dict[str, list[_Doc]] = {s: [] for s in SPLITS}
    stats: list[dict[str, Any]] = []
    for si, src in enumerate(cfg.sources):
        counts = SourceCounts()
        row: dict[str, Any] = {"name": src.name, "kind": src.kind, "weight": src.weight}
        dup = kept = chars = 0
        per_split = {s: 0 for s in SPLITS}
        if src.weight > 0:
            for doc in iter_source(src, counts, cfg.max_docs):
                if len(doc.text.strip()) < cfg.min_chars:
                    counts.empty_skipped += 1
                    continue
                content = hashlib.sha256(doc.text.encode("utf-8")).digest()
                if content in seen:
                    dup += 1
                    continue
                seen.add(content)
                kept += 1
                split = "val" if _unit(hashlib.blake2b(content, key=salt + b"split").digest()) < cfg.val_fraction else "train"
                whole = math.floor(src.weight)
                copies = whole + (_unit(hashlib.blake2b(content, key=salt + b"weight").digest()) < src.weight - whole)
                for c in range(copies):
                    key = hashlib.blake2b(content + c.to_bytes(4, "big"), key=salt + b"order").digest()
                    splits[split].append(_Doc(key, doc.text, si))
                    per_split[split] += 1
                    chars += len(doc.text)
        row.update(
            files=counts.files, docs_read=counts.docs_read, non_utf8_skipped=counts.non_utf8_skipped,
            non_utf8_examples=counts.skipped_files, empty_skipped=counts.empty_skipped, duplicates=dup,
            docs_kept=kept, train_docs=per_split["train"], val_docs=per_split["val"], chars=chars,
        )
        stats.append(row)
    if not splits["train"] and not splits["val"]:
        raise DataError(
            "the corpus is empty after reading, dedup and weights (sources: "
            + ", ".join(f"{r['name']}: {r['docs_read']} read, {r['non_utf8_skipped']} non-UTF-8" for r in stats)
            + "); check the sources' paths, patterns and weights"
        )
    if not splits["train"]:
        raise DataError("no document landed in the train split; lower val_fraction or add data")
    for docs in splits.values():
        docs.sort(key=lambda d: d.key)
    return splits, stats


def _training_texts(docs: Sequence[_Doc], max_chars: int | None) -> Iterator[str]:
    total = 0
    for d in docs:
        if max_chars is not None and total >= max_chars:
            return
        total += len(d.text)
        yield d.text


# ---------------------------------------------------------------- parallel tokenization
_WORKER_TOK: Any = None


def _init_worker(tokenizer_json: str) -> None:
    global _WORKER_TOK
    os.environ["RAYON_NUM_THREADS"] = "1"  # one process per core; no nested thread pools
    _WORKER_TOK = HFTokenizer.from_str(tokenizer_json)


def _encode_chunk(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in _WORKER_TOK.encode_batch(texts, add_special_tokens=False)]


def _chunks(docs: Sequence[_Doc], max_chars: int = 1 << 20) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for d in docs:
        if size >= max_chars:
            out.append([])
            size = 0
        out[-1].append(d.text)
        size += len(d.text)
    return [c for c in out if c]


def encode_documents(tok: Tokenizer, docs: Sequence[_Doc], workers: int, progress: Any = None) -> Iterator[list[list[int]]]:
    """Token ids of ``docs`` in order, chunk by chunk; ``workers`` >= 2 uses a process pool."""
    chunks = _chunks(docs)
    task = progress.add_task("tokenize", total=sum(len(d.text) for d in docs)) if progress else None
    if workers >= 2 and len(chunks) > 1:
        # fork on Linux (works from any script, no __main__ guard needed); the children's tokenizers
        # run single-threaded, so the Rust thread pool inherited from BPE training is never touched.
        method = "fork" if sys.platform == "linux" else "spawn"
        old = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # silences the after-fork warning in the children
        try:
            pool = mp.get_context(method).Pool(
                min(workers, len(chunks)), initializer=_init_worker, initargs=(tok.hf.to_str(),)
            )
        finally:
            if old is None:
                os.environ.pop("TOKENIZERS_PARALLELISM")
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = old
        with pool:
            for chunk, ids in zip(chunks, pool.imap(_encode_chunk, chunks), strict=True):
                if progress:
                    progress.advance(task, sum(len(t) for t in chunk))
                yield ids
    else:
        for chunk in chunks:
            ids = tok.encode_batch(chunk)
            if progress:
                progress.advance(task, sum(len(t) for t in chunk))
            yield ids


# ---------------------------------------------------------------- shard writing
class _ShardWriter:
    """Streams documents into ``split/shard_NNNNN.{bin,idx}`` files, cutting at document boundaries."""

    def __init__(self, root: Path, split: str, dtype: np.dtype, eos_id: int, cut_at: set[int] | None, shard_tokens: int):
        self.dir = root / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.split, self.dtype, self.eos = split, dtype, eos_id
        self.cut_at = cut_at  # document numbers where a new shard starts (num_shards mode)
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.n_docs = 0
        self._f: Any = None

    def _open(self) -> None:
        name = f"shard_{len(self.shards):05d}"
        self._name = name
        self._f = open(self.dir / f"{name}.bin", "wb")
        self._hash = hashlib.sha256()
        self._offsets = [0]

    def _close(self) -> None:
        if self._f is None:
            return
        self._f.close()
        offsets = np.asarray(self._offsets, dtype=np.int64)
        idx_bytes = offsets.tobytes()
        (self.dir / f"{self._name}.idx").write_bytes(idx_bytes)
        self.shards.append({
            "file": f"{self.split}/{self._name}.bin",
            "index": f"{self.split}/{self._name}.idx",
            "tokens": int(offsets[-1]),
            "docs": len(offsets) - 1,
            "bytes": int(offsets[-1]) * self.dtype.itemsize,
            "sha256": self._hash.hexdigest(),
            "index_sha256": hashlib.sha256(idx_bytes).hexdigest(),
        })
        self._f = None

    def add(self, ids: list[int]) -> int:
        new_shard = (
            self.cut_at is not None and self.n_docs in self.cut_at
            or self.cut_at is None and self._f is not None and self._offsets[-1] >= self.shard_tokens
        )
        if new_shard:
            self._close()
        if self._f is None:
            self._open()
        arr = np.empty(len(ids) + 1, dtype=self.dtype)
        arr[:-1] = ids
        arr[-1] = self.eos
        data = arr.tobytes()
        self._f.write(data)
        self._hash.update(data)
        self._offsets.append(self._offsets[-1] + len(arr))
        self.n_docs += 1
        return len(arr)

    def finish(self) -> list[dict[str, Any]]:
        self._close()
        return self.shards


def _cut_points(docs: Sequence[_Doc], num_shards: int) -> list[int]:
    """Document numbers that start shards 1..n-1, balancing characters (a proxy for tokens)."""
    total = sum(len(d.text) for d in docs)
    cuts, acc, target = [], 0, 1
    for i, d in enumerate(docs):
        if target < num_shards and acc >= total * target / num_shards and i > (cuts[-1] if cuts else 0):
            cuts.append(i)
            target += 1
        acc += len(d.text)
    return cuts


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / META_FILE).is_file())):
        raise DataError(
            f"refusing to overwrite {out}: it exists and is not a unimask data dir (no {META_FILE}); "
            "choose another out_dir or remove it"
        )


def _train_tokenizer(cfg: DataConfig, train_docs: Sequence[_Doc]) -> Tokenizer:
    """The one choice of the tokenizer's training set: the deduplicated train split, in on-disk
    order, up to ``tokenizer.max_train_chars``."""
    return train_tokenizer(
        _training_texts(train_docs, cfg.tokenizer.max_train_chars),
        vocab_size=cfg.tokenizer.vocab_size,
        min_frequency=cfg.tokenizer.min_frequency,
    )


def _load_or_train_tokenizer(cfg: DataConfig, train_docs: Sequence[_Doc], log: Any) -> Tokenizer:
    if cfg.tokenizer.path:
        tok = Tokenizer.load(cfg.tokenizer.path)
        log(f"tokenizer: loaded {cfg.tokenizer.path} (vocab {tok.vocab_size})")
        return tok
    t0 = time.perf_counter()
    tok = _train_tokenizer(cfg, train_docs)
    log(f"tokenizer: trained BPE vocab {tok.vocab_size} in {time.perf_counter() - t0:.1f}s")
    return tok


def train_data_tokenizer(cfg: DataConfig) -> Tokenizer:
    """The tokenizer ``prepare_data(cfg)`` trains (ignoring ``tokenizer.path``), alone."""
    splits, _ = _select(cfg)
    return _train_tokenizer(cfg, splits["train"])


def prepare_data(cfg: DataConfig, progress: bool = True) -> Path:
    """Build the data directory ``cfg.out_dir`` from ``cfg``; returns its path."""
    console = Console(stderr=True, quiet=not progress)
    out = Path(cfg.out_dir).expanduser()
    _check_out_dir(out)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    splits, source_stats = _select(cfg)
    timings["read_s"] = time.perf_counter() - t0
    console.log(
        "read: " + ", ".join(
            f"{r['name']} {r['docs_kept']} docs ({r['duplicates']} dup, {r['non_utf8_skipped']} non-UTF-8)"
            for r in source_stats
        )
    )
    t1 = time.perf_counter()
    tok = _load_or_train_tokenizer(cfg, splits["train"], console.log)
    timings["tokenizer_s"] = time.perf_counter() - t1
    dtype = token_dtype(tok.vocab_size)
    t2 = time.perf_counter()
    split_meta: dict[str, Any] = {}
    tokens_per_source = {s: {r["name"]: 0 for r in source_stats} for s in SPLITS}
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with atomic_dir(out) as tmp, Progress(*columns, console=console, disable=not progress) as bar:
        for split in SPLITS:
            docs = splits[split]
            cut_at = set(_cut_points(docs, cfg.num_shards)) if cfg.num_shards else None
            writer = _ShardWriter(tmp, split, dtype, tok.eos_id, cut_at, cfg.shard_tokens)
            i = 0
            for batch in encode_documents(tok, docs, cfg.workers, bar):
                for ids in batch:
                    tokens_per_source[split][cfg.sources[docs[i].source].name] += writer.add(ids)
                    i += 1
            shards = writer.finish()
            split_meta[split] = {
                "docs": len(docs),
                "tokens": sum(s["tokens"] for s in shards),
                "chars": sum(len(d.text) for d in docs),
                "shards": shards,
            }
        timings["tokenize_write_s"] = time.perf_counter() - t2
        tok.save(tmp)
        tok_hash = hashlib.sha256((tmp / "tokenizer.json").read_bytes()).hexdigest()
        for row in source_stats:
            row["train_tokens"] = tokens_per_source["train"][row["name"]]
            row["val_tokens"] = tokens_per_source["val"][row["name"]]
        timings["total_s"] = time.perf_counter() - t0
        meta = {
            "format_version": FORMAT_VERSION,
            "vocab_size": tok.vocab_size,
            "tokenizer_sha256": tok_hash,
            "dtype": dtype.name,
            "eos_id": tok.eos_id,
            "pad_id": tok.pad_id,
            "sources": source_stats,
            "splits": split_meta,
            "config": asdict(cfg),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    console.log(
        f"wrote {out}: train {split_meta['train']['tokens']:,} tokens in {len(split_meta['train']['shards'])} shard(s), "
        f"val {split_meta['val']['tokens']:,} tokens; {timings['total_s']:.1f}s"
    )
    return out
