"""Infilling with AR models in a sentinel format (CodeGen2, FIM PSM/SPM); returns the middle only.

The formats themselves (layouts and stops) are ``unimask.tokenizer.formats``.
"""

from __future__ import annotations

from typing import Any, Literal

from unimask.sampling.backbone import Generation
from unimask.tokenizer.formats import infill_format

InfillFormat = Literal["codegen2", "fim_psm", "fim_spm"]


def infill_prompt(prefix: str, suffix: str, fmt: InfillFormat) -> str:
    """The prompt whose continuation is the middle (special tokens spelled out)."""
    return infill_format(fmt).text(prefix, suffix)


def infill(backbone: Any, prefix: str, suffix: str, fmt: InfillFormat | Literal["native"] = "codegen2",
           max_new_tokens: int = 128, **decoding: Any) -> Generation:
    """Generate the middle between ``prefix`` and ``suffix``.

    AR backbones use a sentinel format and stop at its end markers (``<eom>`` for CodeGen2, EOS for
    FIM); a diffusion backbone with ``fmt="native"`` places ``max_new_tokens`` masks between prefix
    and suffix.
    """
    if fmt == "native":
        if not hasattr(backbone, "infill"):
            raise ValueError(f"a {backbone.kind} backbone has no native infilling; use codegen2 or fim_psm")
        return backbone.infill(prefix, suffix, max_new_tokens, **decoding)
    form = infill_format(fmt)
    return backbone.generate([form.text(prefix, suffix)], max_new_tokens=max_new_tokens, stop=list(form.stops),
                             **decoding)[0]
