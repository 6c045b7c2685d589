"""How the model is spread over ranks: one process, DDP or FSDP2, and everything that differs
between them, in one place.

``parallelize(model, strategy, info, device)`` applies it, in this order:

1. the model moves to this rank's device;
2. one process: nothing more. DDP: wrap (replicated weights, gradients all-reduced in backward).
   FSDP2: ``fully_shard`` every transformer block (the largest ``ModuleList``), then the root,
   so each block's parameters are gathered just before it runs and freed after;
3. ``torch.compile``, when asked, comes after (in the trainer), over the wrapped model.

``Parallelism`` answers the rest for the loop: when gradients sync during accumulation, how the
optimizer state and the full model leave and re-enter a checkpoint, and the reshard FSDP2 needs
after no-grad evaluation. Process-group set-up and collectives are ``train.distributed``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from unimask.train.distributed import DistInfo

STRATEGIES = ("ddp", "fsdp")


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated layers (the largest ``ModuleList``), the natural FSDP sharding unit."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def parallelize(model: torch.nn.Module, strategy: str, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """Move ``model`` to ``device`` and apply ``strategy`` (``ddp`` or ``fsdp``) when there are ranks."""
    model.to(device)
    if not info.enabled:
        return model
    if strategy == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard  # public from torch 2.6; only FSDP runs need it

        for block in transformer_blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"unknown distributed strategy {strategy!r}; use {' or '.join(STRATEGIES)}")


@dataclass
class Parallelism:
    """What the loop must do differently under ``strategy`` once ``parallelize`` has applied it."""

    strategy: str
    info: DistInfo

    @property
    def fsdp(self) -> bool:
        return self.info.enabled and self.strategy == "fsdp"

    @property
    def ddp(self) -> bool:
        return self.info.enabled and self.strategy == "ddp"

    @property
    def optimizer_format(self) -> str:
        """How checkpoints store the optimizer: a full (gathered) FSDP state dict, or plain."""
        return "fsdp_full" if self.fsdp else "plain"

    def grad_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if self.fsdp:
            model.set_requires_gradient_sync(sync)
        return model.no_sync() if (self.ddp and not sync) else contextlib.nullcontext()

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Any:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_optimizer_state_dict(model, optimizer, options=opts)
        return optimizer.state_dict()

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: Any) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(state)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, Any] | None:
        """The unsharded weights (gathered on every rank, kept on CPU) under FSDP; None otherwise."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def after_eval(self, model: torch.nn.Module) -> None:
        """No-grad forwards leave FSDP2 roots unsharded; reshard so parameters are the sharded ones
        the optimizer holds (state-dict gathering keys on them)."""
        if self.fsdp:
            from torch.distributed.fsdp import FSDPModule  # FSDP2-only (torch>=2.6)

            for m in model.modules():
                if isinstance(m, FSDPModule):
                    m.reshard()
