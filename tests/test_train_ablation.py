"""CodeGen2 ablation pieces: the fallback file-level infill objective and the held-out infill tasks."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unimask.experiments.ablation_components import CodeGen2Infill, PrefixLM
from unimask.experiments.codegen2_ablation import make_infill_tasks
from unimask.objectives.example import IGNORE


class _Window:
    def __init__(self, tokens: list[int], docs: list[int]) -> None:
        self.tokens, self.doc_ids = torch.tensor(tokens), torch.tensor(docs)


def _reassemble(ids: list[int], tok) -> list[int]:
    """Invert ``corrupted <eos> <sep> <m1> s1 <eom> ...`` back to the original body."""
    sep = ids.index(tok.sep_id)
    corrupted, spans = ids[: sep - 1], ids[sep + 1 :]
    fills, i = {}, 0
    while i < len(spans):
        j = spans.index(tok.eom_id, i)
        fills[spans[i]] = spans[i + 1 : j]
        i = j + 1
    out = []
    for t in corrupted:
        out += fills[t] if t in fills else [t]
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(9, 50), length=st.integers(20, 64))
def test_infill_pieces_reassemble_to_the_original(tiny_tokenizer, seed, cut, length) -> None:
    tok = tiny_tokenizer
    rng = np.random.default_rng(seed)
    body = [int(x) for x in rng.integers(20, 300, size=length)]
    cut = min(cut, length - 1)
    tokens = body[:cut] + [tok.eos_id] + body[cut:]
    docs = [0] * (cut + 1) + [1] * (length - cut)
    ex = CodeGen2Infill(tok)(_Window(tokens, docs), np.random.default_rng(seed))
    ids, doc_ids = ex.input_ids.tolist(), ex.doc_ids.tolist()
    first = [t for t, d in zip(ids, doc_ids, strict=True) if d == 0]
    second = [t for t, d in zip(ids, doc_ids, strict=True) if d == 1]
    assert _reassemble(first, tok) == body[:cut]  # each document piece is corrupted on its own
    if length - cut >= 8:
        assert _reassemble(second, tok) == body[cut:]
    assert len(ex) <= CodeGen2Infill(tok).max_length(len(tokens))
    # next-token labels never cross the piece boundary, and weights sum to one
    boundary = len(first) - 1
    assert ex.labels[boundary] == IGNORE
    assert abs(float(ex.loss_weights.sum()) - 1.0) < 1e-5


def test_prefix_lm_scores_only_after_the_prefix(tiny_tokenizer) -> None:
    tokens = list(range(30, 62))
    ex = PrefixLM(tiny_tokenizer)(_Window(tokens, [0] * 32), np.random.default_rng(3))
    split = int((ex.block_ids == 0).sum())  # the bidirectional prefix is block 0
    assert (ex.labels[: split - 1] == IGNORE).all()
    assert ex.labels[split - 1 : -1].tolist() == tokens[split:]


def test_infill_tasks_are_whole_lines(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    text = "".join(f"def f{i}(x):\n    return x + {i} * 2\n\n" for i in range(12))
    tasks = make_infill_tasks([tok.encode(text)], tok, n=5, seed=1)
    assert len(tasks) == 5
    for t in tasks:
        assert "\n" in tok.decode(t.prefix[-1:]) and "\n" in tok.decode(t.suffix[:1])
        assert "\n" not in tok.decode(t.middle)
        assert tok.decode(t.middle).strip() in text
