"""Prefix caching across calls: the clean-token KV cache of one call, reused by the next.

An agent's round r+1 prompt is its round r prompt plus the action and the observation, and every
task's prompt starts with the same system prompt. Keeping the KV cache of the last single-prompt
call and truncating it to the longest common token prefix of the next prompt means a round only
prefills what is new (vLLM's automatic prefix caching, for one sequence). The cache must hold only
*clean, causally attended* tokens, which is what an AR cache and a block-diffusion cache of
committed blocks hold; their keys do not depend on what follows, so reuse is exact up to
floating-point summation order.
"""

from __future__ import annotations

from typing import Any


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    """One model's last KV cache and the token ids it holds (batch size 1)."""

    def __init__(self, model: Any):
        self.model = model
        self.cache: Any = None
        self.ids: list[int] = []

    def take(self, prompt: list[int], max_len: int) -> tuple[Any, int]:
        """A batch-1 cache with room for ``max_len`` tokens, already holding the first ``n`` tokens of
        ``prompt``; returns ``(cache, n)``. At least the prompt's last token is left out, so the
        caller's first pass always yields the logits after the prompt."""
        cache, self.cache = self.cache, None
        if cache is None:
            return self.model.new_kv_cache(1, max_len), 0
        n = common_prefix(self.ids[: min(cache.length, len(prompt) - 1)], prompt)
        cache.truncate(n)
        if hasattr(cache, "reserve"):  # a pre-allocated cache grows to the new prompt (a dynamic one needs not)
            cache.reserve(max_len)
        return cache, n

    def put(self, cache: Any, ids: list[int]) -> None:
        """Keep ``cache`` for the next call; ``ids`` start with the tokens it holds."""
        self.cache, self.ids = cache, list(ids[: cache.length])
