"""The infilling formats have one owner: their text and id forms agree, and every user shares them."""

from __future__ import annotations

import pytest

from unimask.evals.infill import PROMPTS, STOPS
from unimask.sampling.infill import infill_prompt
from unimask.tokenizer import special
from unimask.tokenizer.formats import CODEGEN2, FIM_PSM, FIM_SPM, FORMATS, codegen2_targets, infill_format

PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"


@pytest.mark.parametrize("form", [CODEGEN2, FIM_PSM, FIM_SPM], ids=lambda f: f.name)
def test_text_and_ids_are_one_layout(form, tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    ids = form.ids(tok.encode(PREFIX), tok.encode(SUFFIX), tok)
    assert tok.decode(ids) == form.text(PREFIX, SUFFIX)
    assert form.stop_ids(tok) == {tok.token_to_id(s) for s in form.stops}


def test_every_spelling_and_user_shares_the_formats() -> None:
    assert CODEGEN2.text("p", "s") == f"p{special.sentinel(1)}s{special.EOS}{special.SEP}{special.sentinel(1)}"
    assert FIM_SPM.text("p", "s") == f"{special.FIM_PREFIX}{special.FIM_SUFFIX}s{special.FIM_MIDDLE}p"
    assert infill_format("fim") is infill_format("fim_psm") and infill_format("fim-spm") is FIM_SPM
    for name, prompt in PROMPTS.items():
        assert prompt(PREFIX, SUFFIX) == FORMATS[name].text(PREFIX, SUFFIX)
        assert STOPS[name] == list(FORMATS[name].stops)
    assert infill_prompt(PREFIX, SUFFIX, "fim_spm") == FIM_SPM.text(PREFIX, SUFFIX)
    with pytest.raises(ValueError, match="unknown infill format"):
        infill_format("psm")


def test_codegen2_targets_extend_the_one_span_prompt(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    pre, mid, suf = tok.encode(PREFIX), tok.encode("a + b"), tok.encode(SUFFIX)
    example = pre + [tok.sentinel_ids[0]] + suf + codegen2_targets([mid], tok)
    assert example == CODEGEN2.ids(pre, suf, tok) + mid + [tok.eom_id]
