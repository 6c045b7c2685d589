"""Opening a prepared data directory: meta.json, tokenizer check, shards as memmaps.

Every way a data dir can be wrong is caught here with a message that says what to do: a
missing dir or meta.json, a tokenizer.json that does not match meta.json, a shard or index
whose size on disk disagrees with meta.json (truncated copy), ids outside the vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unimask.data.prepare import FORMAT_VERSION, META_FILE
from unimask.data.sources import DataError
from unimask.tokenizer import Tokenizer


@dataclass
class Shard:
    tokens: np.ndarray  # memmap of token ids; document d is tokens[offsets[d]:offsets[d+1]] (ends with EOS)
    offsets: np.ndarray  # int64, n_docs + 1
    file: Path

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1


class DataDir:
    """A validated, read-only view of a prepared data directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise DataError(f"data directory {self.path} does not exist; create it with `unimask data prepare CONFIG`")
        meta_file = self.path / META_FILE
        if not meta_file.is_file():
            raise DataError(f"{self.path} is not a prepared data dir (no {META_FILE}); run `unimask data prepare`")
        try:
            self.meta: dict[str, Any] = json.loads(meta_file.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{meta_file} is not valid JSON ({e}); re-run `unimask data prepare`") from None
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{self.path} has data format {self.meta.get('format_version')}, this unimask reads {FORMAT_VERSION}; "
                "re-run `unimask data prepare`"
            )
        self.dtype = np.dtype(self.meta["dtype"])
        self.vocab_size = int(self.meta["vocab_size"])
        self.eos_id = int(self.meta["eos_id"])
        self.pad_id = int(self.meta["pad_id"])
        self._check_tokenizer_file()

    def _check_tokenizer_file(self) -> None:
        tok_file = self.path / "tokenizer.json"
        if not tok_file.is_file():
            raise DataError(f"{self.path} lacks tokenizer.json; the data dir is incomplete, re-run `unimask data prepare`")
        digest = hashlib.sha256(tok_file.read_bytes()).hexdigest()
        if digest != self.meta["tokenizer_sha256"]:
            raise DataError(
                f"tokenizer/vocab mismatch in {self.path}: tokenizer.json (sha256 {digest[:12]}) is not the tokenizer "
                f"the shards were written with (meta.json: {self.meta['tokenizer_sha256'][:12]}); restore the original "
                "tokenizer.json or re-run `unimask data prepare`"
            )

    def tokenizer(self) -> Tokenizer:
        tok = Tokenizer.load(self.path / "tokenizer.json")
        if tok.vocab_size != self.vocab_size or tok.eos_id != self.eos_id:
            raise DataError(
                f"tokenizer/vocab mismatch in {self.path}: tokenizer.json has vocab {tok.vocab_size}, eos {tok.eos_id}; "
                f"meta.json says vocab {self.vocab_size}, eos {self.eos_id}; re-run `unimask data prepare`"
            )
        return tok

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Raise unless ``tokenizer`` (e.g. a model's) maps text to the same ids as this data's tokenizer."""
        if tokenizer.hf.get_vocab(with_added_tokens=True) != self.tokenizer().hf.get_vocab(with_added_tokens=True):
            raise DataError(
                f"tokenizer/vocab mismatch: the given tokenizer (vocab {tokenizer.vocab_size}) differs from the one "
                f"{self.path} was prepared with (vocab {self.vocab_size}); train on data prepared with the model's "
                "tokenizer (set tokenizer.path in the data config) or use the data dir's tokenizer.json"
            )

    def split_meta(self, split: str) -> dict[str, Any]:
        splits = self.meta["splits"]
        if split not in splits:
            raise DataError(f"unknown split {split!r}; {self.path} has {sorted(splits)}")
        return splits[split]

    def shards(self, split: str) -> list[Shard]:
        """Memory-mapped shards of ``split``, each checked against meta.json's sizes."""
        out = []
        for s in self.split_meta(split)["shards"]:
            file, index = self.path / s["file"], self.path / s["index"]
            for f, size in ((file, s["tokens"] * self.dtype.itemsize), (index, (s["docs"] + 1) * 8)):
                if not f.is_file():
                    raise DataError(f"shard file {f} is missing; the data dir is incomplete, re-run `unimask data prepare`")
                actual = f.stat().st_size
                if actual != size:
                    raise DataError(
                        f"shard file {f} is truncated or damaged: {actual} bytes on disk, meta.json says {size}; "
                        "re-copy the data dir or re-run `unimask data prepare`"
                    )
            tokens = np.memmap(file, dtype=self.dtype, mode="r") if s["tokens"] else np.zeros(0, self.dtype)
            offsets = np.fromfile(index, dtype=np.int64)
            if offsets[0] != 0 or offsets[-1] != s["tokens"] or np.any(np.diff(offsets) < 1):
                raise DataError(f"index {index} is inconsistent with {file}; re-run `unimask data prepare`")
            out.append(Shard(tokens, offsets, file))
        return out

    def verify(self) -> None:
        """Full check: sha256 of every shard and index, and every id inside the vocabulary."""
        for split in self.meta["splits"]:
            metas = self.split_meta(split)["shards"]
            for shard, s in zip(self.shards(split), metas, strict=True):
                for f, want in ((shard.file, s["sha256"]), (self.path / s["index"], s["index_sha256"])):
                    h = hashlib.sha256()
                    with open(f, "rb") as fh:
                        for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                            h.update(block)
                    if h.hexdigest() != want:
                        raise DataError(f"checksum mismatch for {f}: the file is corrupted; re-run `unimask data prepare`")
                if len(shard.tokens) and int(shard.tokens.max()) >= self.vocab_size:
                    raise DataError(f"{shard.file} holds ids >= vocab size {self.vocab_size}; re-run `unimask data prepare`")
