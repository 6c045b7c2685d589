"""Preemption: SIGTERM/SIGINT (a scheduler's notice, Ctrl-C) end a run after the current step,
with a checkpoint, on every rank at once. Across ranks the flag is agreed by a collective, which
the trainer runs only on steps that log or checkpoint (where it syncs anyway), so there a run
stops at the next such step."""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch

from unimask.train.distributed import all_reduce_mean


class StopFlag:
    """SIGTERM/SIGINT (preemption, Ctrl-C) end the run after the current step with a checkpoint."""

    def __init__(self) -> None:
        self.flag = False
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.flag = True

    def requested(self, info: Any, device: torch.device) -> bool:
        if not info.enabled:
            return self.flag
        t = torch.tensor([float(self.flag)], device=device)
        return bool(all_reduce_mean(t, info) > 0)  # every rank stops at the same step

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
