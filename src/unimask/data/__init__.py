"""Data pipeline: corpus sources and mixtures, sharded token files, the resumable packing loader."""

from unimask.data.config import DataConfig, SourceConfig, TokenizerSettings
from unimask.data.loader import PackedLoader, PackedWindow, read_documents
from unimask.data.prepare import prepare_data, token_dtype, train_data_tokenizer
from unimask.data.sources import DataError, Document, docstrings_of, iter_source
from unimask.data.stats import DataStats
from unimask.data.store import DataDir

__all__ = [
    "DataConfig",
    "DataDir",
    "DataError",
    "DataStats",
    "Document",
    "PackedLoader",
    "PackedWindow",
    "SourceConfig",
    "TokenizerSettings",
    "docstrings_of",
    "iter_source",
    "prepare_data",
    "read_documents",
    "token_dtype",
    "train_data_tokenizer",
]
