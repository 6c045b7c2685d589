"""The infilling formats, in one place: how a prefix and a suffix are laid out so that a model
writes the middle, as text (prompts) and as ids (training examples, id-level probes), and which
tokens end the middle.

* ``codegen2``: ``prefix <mask_1> suffix <|endoftext|> <sep> <mask_1>`` -> middle ``<eom>`` (the
  released CodeGen2 format; with N spans the target side repeats ``<mask_k> span_k <eom>``);
* ``fim_psm``: ``<fim_prefix> prefix <fim_suffix> suffix <fim_middle>`` -> middle;
* ``fim_spm``: ``<fim_prefix> <fim_suffix> suffix <fim_middle> prefix`` -> middle (Bavarian et al.).

``unimask eval humaneval-infill`` spells the FIM formats ``fim`` and ``fim-spm``; ``format`` takes
either spelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unimask.tokenizer import special as sp
from unimask.tokenizer.tokenizer import Tokenizer

PREFIX, SUFFIX = "{prefix}", "{suffix}"


@dataclass(frozen=True)
class InfillFormat:
    """A prompt layout (special tokens and the ``PREFIX``/``SUFFIX`` slots) and the middle's stops."""

    name: str
    layout: tuple[str, ...]
    stops: tuple[str, ...]

    def text(self, prefix: str, suffix: str) -> str:
        """The prompt whose continuation is the middle (special tokens spelled out)."""
        return "".join(prefix if p == PREFIX else suffix if p == SUFFIX else p for p in self.layout)

    def ids(self, prefix: Sequence[int], suffix: Sequence[int], tokenizer: Tokenizer) -> list[int]:
        """The same prompt over already tokenised prefix and suffix."""
        out: list[int] = []
        for p in self.layout:
            out += prefix if p == PREFIX else suffix if p == SUFFIX else [tokenizer.token_to_id(p)]
        return out

    def stop_ids(self, tokenizer: Tokenizer) -> set[int]:
        return {tokenizer.token_to_id(s) for s in self.stops}


# A model that opens the next sentinel or FIM block has finished the middle too.
CODEGEN2 = InfillFormat("codegen2", (PREFIX, sp.sentinel(1), SUFFIX, sp.EOS, sp.SEP, sp.sentinel(1)),
                        (sp.EOM, sp.EOS, sp.sentinel(2)))
FIM_PSM = InfillFormat("fim_psm", (sp.FIM_PREFIX, PREFIX, sp.FIM_SUFFIX, SUFFIX, sp.FIM_MIDDLE),
                       (sp.EOS, sp.EOM, sp.FIM_PREFIX))
FIM_SPM = InfillFormat("fim_spm", (sp.FIM_PREFIX, sp.FIM_SUFFIX, SUFFIX, sp.FIM_MIDDLE, PREFIX),
                       (sp.EOS, sp.EOM, sp.FIM_PREFIX))
FORMATS: dict[str, InfillFormat] = {"codegen2": CODEGEN2, "fim_psm": FIM_PSM, "fim_spm": FIM_SPM,
                                    "fim": FIM_PSM, "fim-spm": FIM_SPM}


def infill_format(name: str) -> InfillFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown infill format {name!r}: use codegen2, fim_psm or fim_spm")
    return FORMATS[name]


def codegen2_targets(spans: Sequence[Sequence[int]], tokenizer: Tokenizer) -> list[int]:
    """The target side of a CodeGen2 example after the corrupted file: ``<eos> <sep>`` then
    ``<mask_k> span_k <eom>`` per span (with one span: ``CODEGEN2.ids``' tail, the middle, ``<eom>``)."""
    out = [tokenizer.eos_id, tokenizer.sep_id]
    for k, span in enumerate(spans):
        out += [tokenizer.sentinel_ids[k], *span, tokenizer.eom_id]
    return out
