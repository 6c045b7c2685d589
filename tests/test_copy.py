"""The copy recipe: repeated-span objectives, the induction metric and name-swap augmentation."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from unimask.evals.induction import ar_induction, decoded_induction, quoted_induction
from unimask.objectives import IGNORE, build_objective
from unimask.objectives.copy import Marks, draw_copies, draw_copy
from unimask.sampling.backbone import Generation


@dataclass
class Window:
    tokens: torch.Tensor
    doc_ids: torch.Tensor


def window(n: int = 96, docs: int = 2, seed: int = 0) -> Window:
    g = torch.Generator().manual_seed(seed)
    doc = torch.arange(n) * docs // n
    return Window(torch.randint(10, 500, (n,), generator=g), doc)


@pytest.mark.parametrize("seed", range(20))
def test_draw_copy_repeats_a_source_span_after_it(seed: int) -> None:
    w = window(seed=seed)
    lay = draw_copy(w.tokens, w.doc_ids, np.random.default_rng(seed), 4, 16)
    assert len(lay.tokens) == len(w.tokens) and 4 <= lay.length <= 16
    assert lay.source + lay.length <= lay.start  # the first occurrence ends before the repeat
    src = w.tokens[lay.source : lay.source + lay.length]
    assert torch.equal(lay.tokens[lay.repeat], src)
    # everything else is the window, in order, with the repeat cut in
    rest = torch.cat([lay.tokens[: lay.start], lay.tokens[lay.repeat.stop :]])
    assert torch.equal(rest, w.tokens[: len(w.tokens) - lay.length])


def test_offsets_lengths_and_landing_points_vary() -> None:
    """No positional shortcut: the gap, the length and the landing point are all spread out."""
    w = window(256)
    lays = [draw_copy(w.tokens, w.doc_ids, np.random.default_rng(s), 8, 24) for s in range(200)]
    gaps = {lay.start - lay.source for lay in lays}
    assert len({lay.length for lay in lays}) >= 15 and len(gaps) >= 100 and len({lay.start for lay in lays}) >= 100


def test_copy_scores_the_repeat_after_its_first_token() -> None:
    obj = build_objective("copy", None, min_span=4, max_span=12, repeats=3, lm_weight=0.0)
    w = window(120)
    ex = obj(w, np.random.default_rng(1))
    _, _, _, spans = draw_copies(w, np.random.default_rng(1), 4, 12, 3)
    assert len(spans) == 3 and not any(r.marked for r in spans)
    scored = set((ex.labels != IGNORE).nonzero().flatten().tolist())
    expect = {i for r in spans for i in range(r.start, r.end - 1)}
    assert scored == expect
    for i in expect:
        assert ex.labels[i] == ex.input_ids[i + 1]
    assert ex.loss_weights.sum() == pytest.approx(1.0)
    mixed = build_objective("copy", None, min_span=4, max_span=12, repeats=3, lm_weight=0.5)(w, np.random.default_rng(1))
    assert mixed.loss_weights.sum() == pytest.approx(1.0)
    assert mixed.loss_weights[spans[0].start] == pytest.approx(0.5 / len(expect))
    for r in spans:  # the first token of a repeat is unpredictable: never a target
        assert mixed.labels[r.start - 1] == IGNORE


def test_copy_diffusion_noises_the_repeat_behind_a_clean_anchor(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    obj = build_objective("copy_diffusion", tok, min_span=6, max_span=12, block_size=4, anchor=1)
    w = window(64, docs=1)
    ex = obj(w, np.random.default_rng(0))
    _, _, _, (r,) = draw_copies(w, np.random.default_rng(0), 6, 12, 1)
    L = len(w.tokens)
    noisy = ex.noisy.nonzero().flatten()
    assert len(noisy) == r.end - r.start - 1  # every repeat token but the anchor, once
    assert ex.position_ids[noisy].tolist() == list(range(r.start + 1, r.end))
    assert set(ex.block_ids[noisy].tolist()) == set(range(r.start + 1, r.end, 4))  # blocks start after it
    targets = ex.labels[L:]
    masked = ex.input_ids[L:] == tok.mask_id
    assert torch.equal(targets[masked], ex.input_ids[r.start + 1 : r.end][masked])
    assert (targets[~masked] == IGNORE).all()
    assert len(ex) <= obj.max_length(L)


class InductionOracle(torch.nn.Module):
    """A perfect induction head in plain Python: predict the token that followed the latest
    earlier occurrence of the current token (uniform when there is none)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor, attention=None) -> torch.Tensor:
        B, L = ids.shape
        out = torch.zeros(B, L, self.vocab)
        for b in range(B):
            seen: dict[int, int] = {}
            row = ids[b].tolist()
            for i, t in enumerate(row):
                if t in seen:
                    out[b, i, row[seen[t] + 1]] = 20.0
                seen[t] = i
        return out


def test_ar_induction_scores_a_perfect_copier_and_a_blind_model() -> None:
    g = torch.Generator().manual_seed(0)
    # distinct tokens, so the oracle's "latest earlier occurrence" is always the source
    probes = []
    for s in range(8):
        w = Window(torch.randperm(400, generator=g)[:80] + 10, torch.zeros(80, dtype=torch.long))
        probes.append(draw_copy(w.tokens, w.doc_ids, np.random.default_rng(s), 6, 16))
    good = ar_induction(InductionOracle(512), probes, batch_size=3)
    assert good["copy_acc"] == 1.0 and good["loss_second"] < 1e-3 and good["loss_drop"] > 6  # ln 512 = 6.24
    blind = ar_induction(torch.nn.Sequential(torch.nn.Embedding(512, 512)), probes)
    assert blind["copy_acc"] < 0.2 and abs(blind["loss_drop"]) < 1e-6


class ReplayBackbone:
    """Decodes by looking the prompt up in a table (a stand-in sampler)."""

    def __init__(self, table: dict[tuple[int, ...], list[int]]):
        self.table = table
        self.model = torch.nn.Linear(1, 1)

    def generate(self, prompts, *, max_new_tokens, prompt_ids, **decoding):
        out = self.table[tuple(prompt_ids[0])][:max_new_tokens]
        return [Generation("", out, nfe=2, wall_time=0.0, stop_reason="length")]


def test_decoded_induction_compares_decoded_repeats_with_the_source() -> None:
    w = window(64, docs=1)
    probes = [draw_copy(w.tokens, w.doc_ids, np.random.default_rng(s), 6, 10) for s in range(4)]
    truth = {tuple(p.tokens[: p.start + 1].tolist()): p.tokens[p.start + 1 : p.start + p.length].tolist()
             for p in probes}
    res = decoded_induction(ReplayBackbone(truth), probes)
    assert res["copy_acc"] == 1.0 and res["exact_span"] == 1.0
    half = {k: v[: len(v) // 2] + [0] * (len(v) - len(v) // 2) for k, v in truth.items()}
    res = decoded_induction(ReplayBackbone(half), probes)
    assert 0.3 < res["copy_acc"] < 0.6 and res["exact_span"] == 0.0


def test_name_swap_replaces_the_task_names_everywhere_consistently() -> None:
    from unimask.envs.docqa import swap_names
    from unimask.envs.docqa.dataset import _made_up

    record = {
        "task_id": "docqa-1", "question": "Which module defines `ABCMeta`?", "answer": "abc", "prediction": "abc",
        "meta": {"type": "module", "module": "abc", "doc_id": "abc.ABCMeta", "name": "ABCMeta"},
        "turns": [
            {"role": "user", "content": "Which module defines `ABCMeta`?"},
            {"role": "assistant", "content": '<tool_call>{"name": "search", "arguments": {"query": "ABCMeta"}}</tool_call>'},
            {"role": "tool", "content": "abc.ABCMeta: (class in `abc`) Metaclass for ABCs.\nabcd.x: (function in `abcd`) y"},
            {"role": "assistant", "content": '<tool_call>{"name": "answer", "arguments": {"text": "abc"}}</tool_call>'},
        ],
    }
    pool = ["alpha", "Beta", "gamma", "Delta", "eps"]
    out = swap_names(record, pool, np.random.default_rng(0))
    fake_mod = out["answer"]
    fake_name = json.loads(out["turns"][1]["content"].split("<tool_call>")[1].split("</tool_call>")[0])["arguments"]["query"]
    assert fake_mod != "abc" and fake_name != "ABCMeta" and fake_name[0].isupper()
    assert out["question"] == f"Which module defines `{fake_name}`?"
    assert f"{fake_mod}.{fake_name}: (class in `{fake_mod}`)" in out["turns"][2]["content"]
    assert "abcd.x" in out["turns"][2]["content"] and "ABCs" in out["turns"][2]["content"]  # whole names only
    assert json.loads(out["turns"][3]["content"].split("<tool_call>")[1].split("</tool_call>")[0])["arguments"] == {
        "text": fake_mod}
    assert record["answer"] == "abc" and out["task_id"] == "docqa-1-swap"  # the original is untouched
    assert "_" in _made_up("run_docstring_examples", pool, np.random.default_rng(1))


MARKS = Marks(open=[1], close=[2], cue=[3, 4], end=[5])  # window tokens are >= 10: markers stand out


@pytest.mark.parametrize("seed", range(20))
def test_marked_copy_quotes_the_source_and_the_repeat(seed: int) -> None:
    w = window(seed=seed)
    lay = draw_copy(w.tokens, w.doc_ids, np.random.default_rng(seed), 4, 16, MARKS)
    assert lay.marked and lay.first_known == lay.start and len(lay.tokens) == len(w.tokens)
    span = lay.tokens[lay.source : lay.source + lay.length]
    t = lay.tokens.tolist()
    assert t[lay.source - 1] == 1 and t[lay.source + lay.length] == 2  # `span`
    assert t[lay.start - 2 : lay.start] == [3, 4] and t[lay.start + lay.length] == 5 == t[lay.end - 1]  # "span"
    assert torch.equal(lay.tokens[lay.repeat], span)
    # the window's own tokens, in order, are everything not written in
    assert torch.equal(lay.tokens[~lay.inserted], w.tokens[: int((~lay.inserted).sum())])
    assert int(lay.inserted.sum()) == lay.length + len(MARKS)


def test_marked_copy_scores_the_first_token_and_the_closing_mark() -> None:
    """Quoted, the repeat's start is known: its first token and closing quote are targets, the
    markers never are LM targets (they are noise for the LM)."""
    class Tok:
        def encode(self, text: str) -> list[int]:
            return {"`": [1], ' "': [3, 4], '"': [5]}[text]

    w = window(120)
    obj = build_objective("copy", Tok(), min_span=4, max_span=12, repeats=3, lm_weight=0.5, marked=1.0)
    ex = obj(w, np.random.default_rng(1))
    _, _, inserted, reps = draw_copies(w, np.random.default_rng(1), 4, 12, 3, Marks([1], [1], [3, 4], [5]), 1.0)
    assert all(r.marked for r in reps)
    for r in reps:
        assert ex.labels[r.start - 1] == ex.input_ids[r.start]  # the cue predicts the first copied token
        assert ex.labels[r.end - 2] == 5  # the last copied token predicts the closing quote
    copy_targets = {i for r in reps for i in range(r.start - 1, r.end - 1)}
    for i in range(len(inserted) - 1):
        if inserted[i + 1] and i not in copy_targets:
            assert ex.labels[i] == IGNORE  # a marker is never an LM target
    assert ex.loss_weights.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tokenizer"):
        build_objective("copy", None, marked=0.5)


def test_marked_copy_diffusion_noises_from_the_first_token(tiny_tokenizer) -> None:
    obj = build_objective("copy_diffusion", tiny_tokenizer, min_span=6, max_span=12, block_size=4, anchor=1, marked=1.0)
    w = window(96, docs=1)
    ex = obj(w, np.random.default_rng(0))
    _, _, _, (r,) = draw_copies(w, np.random.default_rng(0), 6, 12, 1, obj.marks, 1.0)
    noisy = ex.noisy.nonzero().flatten()
    assert r.marked and ex.position_ids[noisy].tolist() == list(range(r.start, r.end))  # no clean anchor
    assert len(ex) <= obj.max_length(len(w.tokens))


class QuoteOracle(torch.nn.Module):
    """Copies quoted spans: after the cue (3, 4) it predicts the token after the latest opening
    backtick (1), then keeps copying the source, then the closing quote (5). Uniform elsewhere."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor, attention=None) -> torch.Tensor:
        out = torch.zeros(*ids.shape, self.vocab)
        for b, row in enumerate(ids.tolist()):
            src = None
            for i in range(1, len(row)):
                if row[i - 1 : i + 1] == [3, 4]:
                    src = max(j for j in range(i) if row[j] == 1) + 1
                if src is not None:
                    nxt = row[src]
                    out[b, i, 5 if nxt == 2 else nxt] = 20.0
                    src = None if nxt == 2 else src + 1
        return out


def test_quoted_induction_scores_finding_the_start_of_the_copy() -> None:
    g = torch.Generator().manual_seed(0)
    probes = [draw_copy(torch.randperm(400, generator=g)[:80] + 10, torch.zeros(80, dtype=torch.long),
                        np.random.default_rng(s), 6, 16, MARKS) for s in range(8)]
    good = quoted_induction(QuoteOracle(512), probes, batch_size=3)
    assert good == {"first_acc": 1.0, "copy_acc": 1.0}
    # a perfect induction head never finds the start: the cue has no earlier occurrence to follow
    assert quoted_induction(InductionOracle(512), probes)["first_acc"] == 0.0


def test_shuffle_hits_permutes_search_results_only() -> None:
    from unimask.envs.docqa import shuffle_hits

    hits = "\n".join(f"m{i}.X{i}: (class in `m{i}`) doc {i}" for i in range(6))
    record = {"turns": [
        {"role": "user", "content": "Which module defines `X3`?"},
        {"role": "assistant", "content": '<tool_call>{"name": "search", "arguments": {"query": "X3"}}</tool_call>'},
        {"role": "tool", "content": hits},
        {"role": "assistant", "content": '<tool_call>{"name": "open", "arguments": {"doc_id": "m3.X3"}}</tool_call>'},
        {"role": "tool", "content": "line a\nline b\nline c"},
    ]}
    orders = {shuffle_hits(record, np.random.default_rng(s))["turns"][2]["content"] for s in range(10)}
    assert len(orders) > 5 and all(sorted(o.split("\n")) == sorted(hits.split("\n")) for o in orders)
    out = shuffle_hits(record, np.random.default_rng(0))
    assert out["turns"][4] == record["turns"][4] and out["turns"][:2] == record["turns"][:2]  # only search hits move
    assert record["turns"][2]["content"] == hits  # the original is untouched
