"""Training FLOPs of a step and the fp32 matmul peak they are compared against (the roofline).

Per token processed, a training step costs (forward + backward = 3x the forward)::

    6 * N_matmul + 12 * n_layers * n_heads * head_dim * L

``N_matmul`` counts the weights every token multiplies: the attention and MLP projections of
every layer plus the output head (``vocab * d_model``; a lookup into the embedding is free, so
tied embeddings are counted once, as the head). The second term is attention's two score
matmuls (``QK^T`` and ``PV``, ``2 * 2 * d_attn * L`` per token and layer forward) over the ``L``
keys of the processed sequence, counted in full as PaLM does: a causal kernel may skip the
masked half, so the achieved rate it yields is an upper bound of the useful work. The head term
counts only the tokens that reach the head: the trainer's fused head skips unscored positions
(a block-diffusion layout's clean half), and work not done is not counted.
"""

from __future__ import annotations

import time

import torch

from unimask.model.config import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
    """Weights a token is multiplied by: per-layer projections plus the output head."""
    d, hd = cfg.d_model, cfg.head_dim
    attn = d * cfg.n_heads * hd * 2 + d * cfg.n_kv_heads * hd * 2  # q, o and k, v
    mlp = 3 * d * cfg.d_ff
    return cfg.n_layers * (attn + mlp) + cfg.vocab_size * d


def train_flops_per_token(cfg: ModelConfig, seq_len: int, head_share: float = 1.0) -> float:
    """Forward+backward FLOPs per processed token of a sequence of ``seq_len`` tokens, when a
    ``head_share`` of the tokens reach the output head (the fused head skips unscored ones)."""
    head = cfg.vocab_size * cfg.d_model
    body = matmul_params(cfg) - head
    return 6 * (body + head_share * head) + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best-of-``repeats`` ``n x n @ n x n`` rate in ``dtype`` on the current threads, in GFLOP/s."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


__all__ = ["matmul_params", "matmul_peak_gflops", "train_flops_per_token"]
