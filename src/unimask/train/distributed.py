"""Process-group set-up from ``torchrun``'s environment, and the collectives the loop uses.

There is no launcher here: ``torchrun --nproc_per_node N -m unimask train CONFIG`` sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and this module only reads them. Backend: NCCL on CUDA,
gloo otherwise. How the model is replicated or sharded is ``train.parallelize``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if there is one; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_pref, info.local_rank)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return info, device


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    device = torch.device(pref)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device=cuda requested but CUDA is not available; use device=auto or cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= info.world_size
    return x


def all_reduce_sum(n: int, info: DistInfo, device: torch.device) -> int:
    """``n`` summed over ranks, exactly (int64, on ``device`` so that NCCL can carry it)."""
    if not info.enabled:
        return n
    t = torch.tensor(n, dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo, sync: bool = True) -> None:
    """Destroy the process group; ``sync`` first waits for every rank (the normal exit path).

    Without the barrier a rank that tears gloo down while a peer's last collective is still in
    flight can abort that peer at exit (SIGABRT). After an error, skip it: the peers may never
    arrive, and the failing rank must exit so that torchrun stops the others.
    """
    if info.enabled and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()
