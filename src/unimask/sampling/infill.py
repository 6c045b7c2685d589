"""Infilling with AR models: the CodeGen2 sentinel format and FIM (PSM/SPM); returns the middle only."""

from __future__ import annotations

from typing import Any, Literal

from unimask.sampling.backbone import Generation
from unimask.tokenizer import special as sp

InfillFormat = Literal["codegen2", "fim_psm", "fim_spm"]


def infill_prompt(prefix: str, suffix: str, fmt: InfillFormat) -> str:
    """The prompt whose continuation is the middle (special tokens spelled out)."""
    if fmt == "codegen2":
        return f"{prefix}{sp.sentinel(1)}{suffix}{sp.EOS}{sp.SEP}{sp.sentinel(1)}"
    if fmt == "fim_psm":
        return f"{sp.FIM_PREFIX}{prefix}{sp.FIM_SUFFIX}{suffix}{sp.FIM_MIDDLE}"
    if fmt == "fim_spm":
        return f"{sp.FIM_PREFIX}{sp.FIM_SUFFIX}{suffix}{sp.FIM_MIDDLE}{prefix}"
    raise ValueError(f"unknown infill format {fmt!r}: use codegen2, fim_psm or fim_spm")


def infill(backbone: Any, prefix: str, suffix: str, fmt: InfillFormat | Literal["native"] = "codegen2",
           max_new_tokens: int = 128, **decoding: Any) -> Generation:
    """Generate the middle between ``prefix`` and ``suffix``.

    AR backbones use a sentinel format and stop at ``<eom>`` (CodeGen2) or EOS (FIM); a diffusion
    backbone with ``fmt="native"`` places ``max_new_tokens`` masks between prefix and suffix.
    """
    if fmt == "native":
        if not hasattr(backbone, "infill"):
            raise ValueError(f"a {backbone.kind} backbone has no native infilling; use codegen2 or fim_psm")
        return backbone.infill(prefix, suffix, max_new_tokens, **decoding)
    stops = [sp.EOM, sp.EOS, sp.sentinel(2)] if fmt == "codegen2" else [sp.EOS, sp.FIM_PREFIX]
    return backbone.generate([infill_prompt(prefix, suffix, fmt)], max_new_tokens=max_new_tokens, stop=stops,
                             **decoding)[0]
