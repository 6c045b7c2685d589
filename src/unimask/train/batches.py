"""From raw examples to this rank's micro-batches: objective mixture, per-example RNG, collation.

Every example gets its own ``numpy`` generator seeded by ``(seed, global index)``, so which
objective it draws and how it is corrupted depend only on its position in the stream -- not on
the world size, the micro-batch split or whether the run was resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from unimask.objectives import build_objective
from unimask.objectives.example import Batch, TrainingExample, collate
from unimask.train.config import ObjectiveSpec
from unimask.train.sources import RawSource

ObjectiveFn = Callable[[Any, np.random.Generator], TrainingExample]


class WeightedMixture:
    """Pick one objective per example with probability proportional to its weight."""

    def __init__(self, objectives: Sequence[ObjectiveFn], weights: Sequence[float], names: Sequence[str]):
        w = np.asarray(weights, dtype=np.float64)
        self.objectives, self.probs, self.names = list(objectives), w / w.sum(), list(names)

    def __call__(self, raw: Any, rng: np.random.Generator) -> TrainingExample:
        k = int(rng.choice(len(self.objectives), p=self.probs)) if len(self.objectives) > 1 else 0
        ex = self.objectives[k](raw, rng)
        if not ex.objective:
            ex.objective = self.names[k]
        return ex

    def max_length(self, n: int) -> int:
        return max(getattr(o, "max_length", lambda n: n)(n) for o in self.objectives)


def build_objective_fn(specs: Sequence[ObjectiveSpec], tokenizer: Any) -> WeightedMixture:
    """Instantiate each named objective from ``unimask.objectives`` and mix them by weight."""
    objs = [build_objective(s.name, tokenizer, **s.params) for s in specs if s.weight > 0]
    kept = [s for s in specs if s.weight > 0]
    return WeightedMixture(objs, [s.weight for s in kept], [s.name for s in kept])


class MicroBatches:
    """Yields this rank's micro-batches, ``accum`` per optimiser step.

    ``global_stream=True``: every rank reads the same raw stream; step ``s`` consumes
    ``micro * accum * world`` raw examples and rank ``r`` keeps the ``r``-th contiguous slice.
    ``global_stream=False``: the source is already this rank's shard.
    """

    def __init__(
        self, source: RawSource, objective: ObjectiveFn, pad_id: int, micro: int, accum: int,
        rank: int = 0, world_size: int = 1, seed: int = 0, global_stream: bool = True, pad_to_multiple: int = 1,
    ) -> None:
        self.source, self.objective, self.pad_id = source, objective, pad_id
        self.micro, self.accum, self.rank, self.world_size = micro, accum, rank, world_size
        self.seed, self.global_stream, self.pad_to_multiple = seed, global_stream, pad_to_multiple
        self.consumed = 0  # raw examples taken from the source (global count in global mode)

    def _rng(self, index: int) -> np.random.Generator:
        key = [self.seed, index] if self.global_stream else [self.seed, self.rank, index]
        return np.random.default_rng(key)

    def step_batches(self) -> list[Batch]:
        """The ``accum`` micro-batches of the next optimiser step for this rank."""
        per_rank = self.micro * self.accum
        if self.global_stream:
            lo, hi = self.rank * per_rank, (self.rank + 1) * per_rank
            n = per_rank * self.world_size
        else:
            lo, hi, n = 0, per_rank, per_rank
        mine: list[TrainingExample] = []
        for j in range(n):
            raw = next(self.source)
            if lo <= j < hi:
                mine.append(self.objective(raw, self._rng(self.consumed + j)))
        self.consumed += n
        return [
            collate(mine[i : i + self.micro], self.pad_id, self.pad_to_multiple) for i in range(0, per_rank, self.micro)
        ]

    def state_dict(self) -> dict[str, Any]:
        return {"source": self.source.state_dict(), "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state["source"])
        self.consumed = int(state["consumed"])
