"""Run metrics: a JSONL log, TensorBoard scalars and a rich progress bar (loss, tokens/s, ETA);
without the bar, each logged step is also a log line.

Only rank 0 logs. On resume the JSONL log is cut back to the checkpoint's step (rewritten
atomically), so a resumed run's log reads like an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from unimask.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"
log = logging.getLogger(__name__)


class MetricsLogger:
    def __init__(self, out_dir: str | Path, total_steps: int, start_step: int = 0, *, enabled: bool = True,
                 tensorboard: bool = True, progress: bool = True) -> None:
        self.enabled = enabled
        self.total_steps = total_steps
        self.path = Path(out_dir) / METRICS_FILE
        self._tb = None
        self._progress = None
        self._task = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        self._file = self.path.open("a", encoding="utf-8")
        if tensorboard:
            # tensorboard is slow to import and unused with tensorboard=false
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=start_step + 1)
        if progress:
            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=total_steps, completed=start_step, loss=float("nan"), tps=0.0)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def log(self, step: int, values: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, "time": time.time(), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._progress is None:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, (int, float)))
            log.info("%s %s step %d/%d: %s", self.path.parent.name, kind, step, self.total_steps, shown)
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def advance(self, step: int, loss: float, tokens_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, loss=loss, tps=tokens_per_s)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._progress is not None:
            self._progress.stop()
