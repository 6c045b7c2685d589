"""Settings of the data pipeline: sources, their mixture weights, tokenizer, split and sharding.

The defaults *are* the embedded default corpus (the running interpreter's standard library:
its ``.py`` files as programming language, its documentation as natural language), so
``DataConfig()`` works on every machine and from an installed wheel; ``configs/data/stdlib.yaml``
spells the same values out as a file to copy and edit.

Mixture weights (CodeGen2 studies PL/NL mixtures) act per *document* and deterministically:
a document of a source with weight ``w`` is written ``floor(w)`` times, plus once more when a
hash of its content (salted with ``seed``) falls below ``w - floor(w)``. So ``2`` repeats every
document twice, ``0.5`` keeps a fixed half of them, ``0`` disables the source. Every copy of a
document lands in the same train/val split, so repetition never leaks validation text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCE_KINDS = ("stdlib_code", "stdlib_docs", "glob", "jsonl", "parquet", "hf_dataset")


@dataclass
class SourceConfig:
    """One corpus source.

    kind: ``stdlib_code`` (stdlib ``.py`` files; ``path`` overrides the stdlib dir),
    ``stdlib_docs`` (pydoc topics + module/class/function docstrings, read with ``ast``, never
    imported), ``glob`` (files under ``path`` matching ``pattern``), ``jsonl`` / ``parquet``
    (a file, or files under a directory matching ``pattern``, with the text in ``text_field``),
    ``hf_dataset`` (a local dataset directory written by ``datasets.save_to_disk``; ``split``
    picks one split of a DatasetDict).
    """

    name: str
    kind: str
    path: str | None = None
    pattern: str | None = None
    text_field: str = "text"
    split: str = "train"
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source {self.name!r}: unknown kind {self.kind!r}; expected one of {list(SOURCE_KINDS)}")
        if self.weight < 0:
            raise ValueError(f"source {self.name!r}: weight must be >= 0 (0 disables it), got {self.weight}")
        if self.kind in ("glob", "jsonl", "parquet", "hf_dataset") and not self.path:
            raise ValueError(f"source {self.name!r} of kind {self.kind!r} needs a path")


@dataclass
class TokenizerSettings:
    """Use an existing tokenizer (``path``: a tokenizer.json or a local HF tokenizer dir) or train one."""

    path: str | None = None
    vocab_size: int = 4096
    min_frequency: int = 2
    max_train_chars: int | None = 50_000_000  # cap on text fed to BPE training (speed), None = all


def default_sources() -> list[SourceConfig]:
    return [
        SourceConfig(name="stdlib_code", kind="stdlib_code", weight=1.0),
        SourceConfig(name="stdlib_docs", kind="stdlib_docs", weight=1.0),
    ]


@dataclass
class DataConfig:
    """Everything ``unimask data prepare`` needs; the defaults prepare the stdlib corpus quickly."""

    sources: list[SourceConfig] = field(default_factory=default_sources)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    out_dir: str = "data/stdlib"
    val_fraction: float = 0.05
    seed: int = 0
    shard_tokens: int = 16_777_216  # a shard is cut after this many tokens (at a document boundary)
    num_shards: int | None = None  # if set, each split gets exactly this many shards (overrides shard_tokens)
    workers: int = 2  # tokenizer processes; 0 = tokenize in this process
    max_docs: int | None = 400  # per-source cap for quick runs (an even spread, not the first N); None = all
    min_chars: int = 1  # documents shorter than this (after stripping) are skipped and counted

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("data config has no sources; add at least one under `sources:`")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1 (or null), got {self.num_shards}")
        if self.shard_tokens < 1:
            raise ValueError(f"shard_tokens must be >= 1, got {self.shard_tokens}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.max_docs is not None and self.max_docs < 1:
            raise ValueError(f"max_docs must be >= 1 (or null for all), got {self.max_docs}")
