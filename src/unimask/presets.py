"""Named model presets, all in one place (``model_preset("tiny")``).

``tiny`` is for tests; ``small``/``base`` are what the CPU default jobs train; the
``codegen2-1b`` and ``llada-8b`` shapes are for GPU users (never trained here).
"""

from __future__ import annotations

from unimask.config import from_dict
from unimask.model.config import ModelConfig

MODEL_PRESETS: dict[str, dict] = {
    "tiny": dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, max_seq_len=256),
    "small": dict(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, max_seq_len=512),
    "base": dict(vocab_size=8192, d_model=256, n_layers=6, n_heads=8, max_seq_len=1024),
    # CodeGen2-1B: 16 layers, d 2048, 16 heads, 2048 context (shape only; our blocks are Llama-style).
    "codegen2-1b": dict(vocab_size=51200, d_model=2048, n_layers=16, n_heads=16, d_ff=8192, max_seq_len=2048,
                        tie_embeddings=False),
    # LLaDA-8B: 32 layers, d 4096, 32 heads, SwiGLU 12288, vocab 126464, 4096 context.
    "llada-8b": dict(vocab_size=126464, d_model=4096, n_layers=32, n_heads=32, d_ff=12288, max_seq_len=4096,
                     rope_theta=500000.0, tie_embeddings=False),
}


def model_preset(name: str, **overrides: object) -> ModelConfig:
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
    # from_dict types the overrides (CLI strings such as "true" or "1024") and names unknown keys
    return from_dict(ModelConfig, {**MODEL_PRESETS[name], **overrides})


def preset_names() -> list[str]:
    return sorted(MODEL_PRESETS)


__all__ = ["MODEL_PRESETS", "model_preset", "preset_names"]
