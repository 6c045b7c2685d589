"""``DecodingOptions``: the one table of decoding options every backbone accepts, and their defaults.

A backbone reads the options it implements and accepts the others unread, so one settings table
drives any backbone (the server's ``top_p`` reaches a diffusion model, a comparison's ``threshold``
an AR one). A name outside the table is an error that names it and lists the valid ones:
``load_backbone(ckpt, **options)``, ``Backbone.generate(..., **options)`` and the CLI's
``--decoding.NAME`` all validate through ``DecodingOptions.replace``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Remasking = Literal["low_confidence", "random"]
CacheMode = Literal["none", "prefix", "dual"]


class UnknownOptionError(TypeError):
    """A decoding option no backbone knows (a ``TypeError``, as an unexpected keyword argument is)."""


@dataclass(frozen=True)
class DecodingOptions:
    """Decoding options and their defaults. AR reads ``temperature``..``stop_token_ids`` and
    ``prefix_cache``; diffusion reads ``temperature``, ``seed``, ``forced_tokens`` and
    ``threshold``..``prefix_cache``."""

    temperature: float = 0.0
    top_k: int = 0  # AR
    top_p: float = 1.0  # AR
    seed: int | None = None
    forced_tokens: bool = False  # with a constraint: write its forced continuations without a pass
    stop_token_ids: Sequence[int] | None = None  # AR; None = EOS and pad
    threshold: float | None = 0.9  # diffusion: commit every position above it; None = LLaDA's fixed schedule
    steps: int | None = None  # diffusion, fixed schedule: passes over the whole generation; None = one per token
    block_length: int | None = None  # diffusion; None = the checkpoint's block size
    remasking: Remasking = "low_confidence"  # diffusion, fixed schedule
    cache: CacheMode | None = "dual"  # masked diffusion; None = "none"
    # AR (one prompt per call) and block diffusion: start from the previous call's KV cache, truncated
    # to the longest common token prefix, so that an agent round prefills only its new tokens
    prefix_cache: bool = True

    def replace(self, **options: Any) -> DecodingOptions:
        """These options with ``options`` set. ``None`` for an option that has no ``None`` meaning
        (``temperature``, ``top_k``, ``top_p``, ``forced_tokens``, ``remasking``, ``prefix_cache``) keeps this
        value."""
        check_options(options)
        given = {k: v for k, v in options.items() if v is not None or k not in _NONE_KEEPS}
        return dataclasses.replace(self, **given) if given else self


_NAMES = tuple(f.name for f in dataclasses.fields(DecodingOptions))
_NONE_KEEPS = frozenset({"temperature", "top_k", "top_p", "forced_tokens", "remasking", "prefix_cache"})


def check_options(options: Mapping[str, Any]) -> None:
    """Raise ``UnknownOptionError`` naming every option in ``options`` outside ``DecodingOptions``."""
    unknown = [k for k in options if k not in _NAMES]
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        raise UnknownOptionError(f"unknown decoding option{s} {', '.join(map(repr, unknown))}; "
                                 f"valid options: {', '.join(_NAMES)}")
