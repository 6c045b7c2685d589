"""Tokenization throughput: the full ``prepare_data`` pipeline vs ``tokenizers`` batch encoding alone.

Both tokenize the same stdlib text with the same tokenizer; the pipeline also reads files,
deduplicates, splits, writes memmap shards and checksums. Prints MB/s for both and the ratio.
Usage: python benchmarks/bench_tokenize.py [--max-docs 600] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from unimask.config import from_dict
from unimask.data import DataConfig, prepare_data
from unimask.data.sources import SourceCounts, iter_source
from unimask.tokenizer import Tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-docs", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = {"max_docs": args.max_docs, "workers": args.workers, "tokenizer": {"vocab_size": 4096}}
        first = prepare_data(from_dict(DataConfig, {**base, "out_dir": f"{tmp}/a"}), progress=False)
        tok_path = str(Path(first) / "tokenizer.json")
        cfg = from_dict(DataConfig, {**base, "out_dir": f"{tmp}/b", "tokenizer": {"path": tok_path}})
        texts = [d.text for s in cfg.sources for d in iter_source(s, SourceCounts(), cfg.max_docs)]
        mb = sum(len(t.encode()) for t in texts) / 1e6
        t = time.perf_counter()
        prepare_data(cfg, progress=False)
        pipeline = time.perf_counter() - t
        tok = Tokenizer.load(tok_path)
        t = time.perf_counter()
        tok.encode_batch(texts)
        alone = time.perf_counter() - t
    print(f"{len(texts)} documents, {mb:.1f} MB, workers={args.workers}")
    print(f"full pipeline (read, dedup, split, tokenize, shard, checksum): {mb / pipeline:6.2f} MB/s")
    print(f"tokenizers encode_batch alone:                                {mb / alone:6.2f} MB/s")
    print(f"ratio pipeline/alone: {alone / pipeline:.2f}x")


if __name__ == "__main__":
    main()
