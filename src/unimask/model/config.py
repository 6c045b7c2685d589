"""``ModelConfig``: the shape of the one unimask transformer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ROPE_TYPES = ("default", "linear", "llama3")


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (plain multi-head); fewer = grouped-query attention
    d_ff: int | None = None  # None = SwiGLU's 8/3 * d_model rounded up to a multiple of 64
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    attn_impl: Literal["sdpa", "flex"] = "sdpa"
    init_std: float = 0.02
    # Mix the embedding of each token's predecessor (the visible token one position earlier) into
    # its own, through a learned gate: a previous-token feature at layer 0, which small models
    # otherwise need a dedicated attention head and many steps to learn before they can copy.
    smear: bool = False
    # Options imported checkpoints need (``unimask convert``); the defaults are the plain block.
    attn_bias: bool = False  # biases on the q/k/v projections (Qwen2/Qwen2.5, Dream)
    qk_norm: bool = False  # per-head RMSNorm on queries and keys before RoPE (Qwen3)
    attn_head_dim: int | None = None  # None = d_model // n_heads; set when heads are wider or narrower
    # RoPE frequency scaling as in Hugging Face ``rope_parameters`` (None = none): {"rope_type":
    # "linear", "factor": f} or {"rope_type": "llama3", "factor", "low_freq_factor",
    # "high_freq_factor", "original_max_position_embeddings"}
    rope_scaling: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.attn_head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} must be divisible by n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even for RoPE")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", "default")
            if kind not in ROPE_TYPES:
                raise ValueError(f"rope_scaling type {kind!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
        if self.d_ff is None:
            self.d_ff = -(-int(8 * self.d_model / 3) // 64) * 64

    @property
    def head_dim(self) -> int:
        return self.attn_head_dim or self.d_model // self.n_heads
