"""The one unimask transformer, its attention structures, KV cache, checkpoints and HF interop."""

from unimask.model.attention import AttentionStructure
from unimask.model.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from unimask.model.config import ModelConfig
from unimask.model.transformer import KVCache, Transformer

__all__ = [
    "AttentionStructure",
    "CheckpointError",
    "KVCache",
    "ModelConfig",
    "Transformer",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
]
