"""Run a pipeline's stages as a dependency graph, up to ``workers`` at once, each in its own process.

A ``Stage`` is a picklable call (a module-level function and its keyword arguments) with the names
of the stages it needs and the torch thread count it runs with, so its numbers depend only on its
inputs, never on what runs beside it or in which order. List order is priority: a free worker
takes the first stage whose needs are met. Needs that name no listed stage count as met (the
caller leaves out the stages it reuses). ``workers=1`` runs the stages in that order in this
process (tests, debugging).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[..., Any]  # module-level, so that a spawned worker can import it
    kwargs: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    threads: int = 0  # torch intra-op threads for the stage (0: leave the process's setting)
    title: str = ""  # what the log says when it starts


def _call(fn: Callable[..., Any], kwargs: dict[str, Any], threads: int) -> float:
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        fn(**kwargs)
    finally:
        torch.set_num_threads(before)
    return time.perf_counter() - started


def _worker_init() -> None:
    logging.basicConfig(level=logging.INFO, format="    %(message)s", force=True)


def in_worker() -> bool:
    """True inside a stage's worker process (where progress bars would garble each other)."""
    return multiprocessing.parent_process() is not None


def run_stages(stages: Sequence[Stage], workers: int, on_done: Callable[[str, float], None],
               logger: logging.Logger = log) -> None:
    """Run every stage once its needs are met; ``on_done(name, seconds)`` follows each one."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique: {names}")
    listed = set(names)
    pending = list(stages)
    done: set[str] = set()

    def ready() -> Stage | None:
        return next((s for s in pending if all(n in done or n not in listed for n in s.needs)), None)

    def start(stage: Stage) -> None:
        pending.remove(stage)
        logger.info("▶ %s", stage.title or stage.name)

    if workers <= 1:
        while pending:
            stage = ready()
            if stage is None:
                raise ValueError(f"stages {[s.name for s in pending]} need each other")
            start(stage)
            on_done(stage.name, _call(stage.fn, stage.kwargs, stage.threads))
            done.add(stage.name)
        return
    if not pending:
        return
    ctx = multiprocessing.get_context("spawn")  # fork would copy a process holding torch's thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        running: dict[Future[float], Stage] = {}
        try:
            while pending or running:
                while len(running) < workers and (stage := ready()) is not None:
                    start(stage)
                    running[pool.submit(_call, stage.fn, stage.kwargs, stage.threads)] = stage
                if not running:
                    raise ValueError(f"stages {[s.name for s in pending]} need each other")
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    stage = running.pop(future)
                    on_done(stage.name, future.result())  # a stage's exception is raised here
                    done.add(stage.name)
        except BaseException:
            for future in running:
                future.cancel()
            raise
