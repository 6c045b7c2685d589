"""``ScriptedPolicy``: a Backbone driven by a function of the turns so far (oracles, tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from unimask.sampling.backbone import Generation
from unimask.sampling.constraint import Constraint
from unimask.sampling.options import check_options
from unimask.tokenizer import Tokenizer
from unimask.tokenizer.chat import Turn, parse_rendered


class ScriptedPolicy:
    kind = "scripted"

    def __init__(self, act: Callable[[list[Turn]], str], tokenizer: Tokenizer):
        self.act = act
        self.tokenizer = tokenizer

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str] | None = None,
                 constraint: Constraint | None = None, **decoding: Any) -> list[Generation]:
        check_options(decoding)  # read by no policy, but a misspelt option is still an error
        out = []
        for p in prompts:
            t0 = time.perf_counter()
            text = self.act(parse_rendered(p))
            ids = self.tokenizer.encode(text)
            out.append(Generation(text, ids, nfe=0, wall_time=time.perf_counter() - t0, stop_reason="stop"))
        return out
