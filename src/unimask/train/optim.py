"""AdamW with decoupled weight decay groups and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from unimask.train.config import OptimSection


def lr_at(step: int, total_steps: int, cfg: OptimSection) -> float:
    """Linear warmup from 0 to ``cfg.lr`` over ``warmup_steps``, then cosine decay to ``min_lr``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg: OptimSection, device: torch.device) -> torch.optim.AdamW:
    """AdamW; matrices decay, vectors (norms, biases) do not; fused kernels where supported."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps}
    if cfg.fused and _fused_supported(model, device):
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    return torch.optim.AdamW(groups, foreach=device.type != "cpu" or None, **kwargs)


def _fused_supported(model: torch.nn.Module, device: torch.device) -> bool:
    # DTensor (FSDP2) parameters and non-float params are not handled by every fused build.
    if device.type not in ("cuda", "cpu", "mps", "xpu"):
        return False
    return all(p.dtype.is_floating_point and type(p.data) is torch.Tensor for p in model.parameters())
