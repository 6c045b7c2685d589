"""Dynamic batching of concurrent requests onto one backbone.

Requests arriving within a short window that share decoding settings are generated in one
``Backbone.generate`` call (one batched forward per step for every prompt in it). A single
worker thread owns the model, so the event loop never blocks and the model is never entered
concurrently; each prompt's result (and its stream updates) go back to its own request only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from unimask.sampling.backbone import Backbone, Generation

StreamFn = Callable[[str], None]


@dataclass
class _Job:
    prompt: str
    settings: tuple[tuple[str, Any], ...]  # hashable decoding settings; jobs batch only when equal
    future: asyncio.Future[Generation]
    on_text: StreamFn | None = None  # called (from the worker thread) with the text so far
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)


class GenerationBatcher:
    """Collects jobs for ``window_s`` (up to ``max_batch``) and runs them as batches."""

    def __init__(self, backbone: Backbone, max_batch: int = 8, window_s: float = 0.01):
        self.backbone = backbone
        self.max_batch = max_batch
        self.window_s = window_s
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unimask-generate")
        self._lock = threading.Lock()
        self.batches_run = 0
        self.largest_batch = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, prompt: str, settings: dict[str, Any], on_text: StreamFn | None = None) -> Generation:
        if self._queue is None:
            raise RuntimeError("GenerationBatcher.start() was not awaited")
        loop = asyncio.get_running_loop()
        job = _Job(prompt, tuple(sorted(settings.items())), loop.create_future(), on_text, loop)
        await self._queue.put(job)
        return await job.future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            jobs = [first]
            deadline = asyncio.get_running_loop().time() + self.window_s
            while len(jobs) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            groups: dict[tuple[tuple[str, Any], ...], list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.settings, []).append(job)
            for settings, group in groups.items():
                await self._generate(group, dict(settings))

    async def _generate(self, jobs: list[_Job], settings: dict[str, Any]) -> None:
        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        streams = [j.on_text for j in jobs]
        if any(streams):
            settings = {**settings, "on_update": lambda i, text: streams[i] and streams[i](text)}
        loop = asyncio.get_running_loop()
        try:
            gens = await loop.run_in_executor(
                self._executor, lambda: self.backbone.generate([j.prompt for j in jobs], **settings)
            )
        except Exception as e:  # a failure of the batch fails each of its requests, not the server
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        for j, g in zip(jobs, gens, strict=True):
            if not j.future.done():
                j.future.set_result(g)
