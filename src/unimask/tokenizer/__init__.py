"""Tokenizer training/loading and the special-token vocabulary."""

from unimask.tokenizer.special import SPECIAL_TOKENS
from unimask.tokenizer.tokenizer import TOKENIZER_FILE, Tokenizer, TokenizerError, train_tokenizer

__all__ = ["SPECIAL_TOKENS", "TOKENIZER_FILE", "Tokenizer", "TokenizerError", "train_tokenizer"]
