"""Objectives: targets recoverable, formats exact (golden), and no target visible through the real model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unimask.model import Transformer
from unimask.objectives import IGNORE, build_objective, objective_names
from unimask.presets import model_preset
from unimask.tokenizer.chat import Turn, render_turns

GOLDEN = Path(__file__).parent / "golden" / "objectives.json"
SHIFTED = {"causal", "prefix_lm", "span_corruption", "codegen2_infill", "codegen2", "fim", "copy", "agent_sft_ar"}
TRAJECTORY = {"agent_sft_ar", "agent_sft_diffusion"}


@dataclass
class Window:
    tokens: torch.Tensor
    doc_ids: torch.Tensor


CODE_A = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n"
CODE_B = "import json\nprint(json.dumps({'k': [1, 2, 3]}, indent=2))\n"


def window(tok, n: int = 48) -> Window:
    a = tok.encode(CODE_A) + [tok.eos_id]
    b = tok.encode(CODE_B) + [tok.eos_id]
    ids = (a + b)[:n]
    doc = ([0] * len(a) + [1] * len(b))[:n]
    return Window(torch.tensor(ids), torch.tensor(doc))


def trajectory(tok):
    return render_turns([
        Turn("system", "Use the tools."),
        Turn("user", "Default of indent in json.dumps?"),
        Turn("assistant", '<think>look</think><tool_call>{"name": "open", "arguments": {"doc_id": "json.dumps"}}</tool_call>'),
        Turn("tool", "json.dumps(obj, *, indent=None)"),
        Turn("assistant", '<tool_call>{"name": "answer", "arguments": {"text": "None"}}</tool_call>'),
    ], tok)


def make(name, tok, seed=0, **params):
    obj = build_objective(name, tok, **params)
    raw = trajectory(tok) if name in TRAJECTORY else window(tok)
    return obj, raw, obj(raw, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def model(tiny_tokenizer) -> Transformer:
    torch.manual_seed(0)
    return Transformer(model_preset("tiny", max_seq_len=512)).eval()


CASES = [(n, {}) for n in objective_names()] + [
    ("block_diffusion", {"clean_attention": "block", "block_size": 8}),
    ("block_diffusion", {"ar_weight": 0.5, "block_size": 8}),
    ("masked_diffusion", {}),
    ("agent_sft_ar", {"context_weight": 0.5}),
    ("agent_sft_diffusion", {"context_weight": 0.5}),
    ("copy", {"repeats": 2, "min_span": 4, "max_span": 8}),
    ("copy_diffusion", {"repeats": 2, "min_span": 4, "max_span": 8, "block_size": 4}),
    ("block_diffusion", {"ar_weight": 0.5, "block_size": 8, "shift": True}),
    ("masked_diffusion", {"shift": True}),
    ("agent_sft_diffusion", {"context_weight": 0.5, "shift": True}),
    ("copy_diffusion", {"repeats": 2, "min_span": 4, "max_span": 8, "block_size": 4, "shift": True}),
    ("agent_sft_diffusion", {"ar_weight": 1.0, "context_weight": 0.5}),
    ("agent_sft_diffusion", {"ar_weight": 1.0, "shift": True}),
]


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}{'-' + str(p) if p else ''}" for n, p in CASES])
def test_no_target_visible_to_its_predictor(model, tiny_tokenizer, name, params):
    """Perturb every clean token that carries a target (its clean twin and everything after it in the
    same document); the logits at the predicting position must not move. A visible token must."""
    if name == "agent_sft_diffusion" and params.get("aligned") is False:
        pytest.skip("the unaligned ablation leaks by design (see test_unaligned_ablation_leaks)")
    tok = tiny_tokenizer
    _, _, ex = make(name, tok, seed=3, **params)
    ids, att = ex.input_ids[None], ex.attention
    with torch.no_grad():
        base = model(ids, att)[0]
    scored = (ex.labels != IGNORE).nonzero().flatten().tolist()
    assert scored, "objective scored nothing"
    g = torch.Generator().manual_seed(0)
    for i in scored[:: max(1, len(scored) // 4)]:
        # block diffusion's optional AR loss scores clean tokens with next-token targets
        shifted = name in SHIFTED or params.get("shift", False) or (
            name in ("block_diffusion", "agent_sft_diffusion", "copy_diffusion") and not bool(ex.noisy[i]))
        if not shifted:
            assert ex.input_ids[i] == tok.mask_id, "a diffusion target must be masked in the input"
        first = ex.position_ids[i] + (1 if shifted else 0)
        hide = (~ex.noisy) & (ex.doc_ids == ex.doc_ids[i]) & (ex.position_ids >= first)
        if name not in SHIFTED and not bool(ex.noisy.any()):
            hide[:] = False  # in-place masking (LLaDA, Dream): the only copy of the target is the mask itself
        if not bool(hide.any()):
            continue
        pert = ids.clone()
        pert[0, hide] = torch.randint(3, tok.vocab_size, (int(hide.sum()),), generator=g)
        with torch.no_grad():
            out = model(pert, att)[0]
        assert torch.equal(out[i], base[i]), f"{name}: target of position {i} leaked"
    # positive control: the token just before the first scored position is visible to it
    i = scored[-1]
    visible = att.dense_mask()[0, 0, i].clone()
    visible[i] = False
    j = int(visible.nonzero().flatten().max())
    pert = ids.clone()
    pert[0, j] = (pert[0, j] + 7) % tok.vocab_size
    with torch.no_grad():
        assert not torch.equal(model(pert, att)[0, i], base[i])


def test_unaligned_ablation_leaks(tiny_tokenizer):
    """Unaligned: context after an action is visible to the action's masked tokens (the paper's flaw)."""
    _, raw, ex = make("agent_sft_diffusion", tiny_tokenizer, aligned=False)
    mask = ex.attention.dense_mask()[0, 0]
    first_action = raw.is_action.index(True)
    assert bool(mask[first_action, len(ex) - 1])  # sees the final turn
    _, _, al = make("agent_sft_diffusion", tiny_tokenizer, aligned=True)
    m = al.attention.dense_mask()[0, 0]
    L = len(raw)
    noisy = al.noisy.nonzero().flatten()
    # aligned: no clean token sees a noisy one; a noisy token never sees clean tokens at/after its block
    assert not bool(m[:L][:, noisy].any())
    for q in noisy.tolist():
        seen_clean = m[q, :L].nonzero().flatten()
        assert bool((al.position_ids[seen_clean] < al.block_ids[q]).all())


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), lo=st.floats(0.05, 0.4), span=st.floats(1.0, 8.0))
def test_infill_and_span_corruption_reassemble(tiny_tokenizer, seed, lo, span):
    tok = tiny_tokenizer
    w = window(tok)
    for name in ("codegen2_infill", "span_corruption"):
        obj = build_objective(name, tok, mask_ratio=(lo, lo + 0.1), mean_span=span)
        ex = obj(w, np.random.default_rng(seed))
        assert len(ex) <= obj.max_length(len(w.tokens))
        ids = ex.input_ids.tolist()
        docs = ex.doc_ids.tolist()
        rebuilt: list[int] = []
        for d in sorted(set(docs)):
            piece = [t for t, dd in zip(ids, docs, strict=True) if dd == d]
            if tok.sep_id not in piece:
                rebuilt += piece
                continue
            k = piece.index(tok.sep_id)
            if name == "codegen2_infill":  # ctx <|endoftext|> <sep> (<mask_k> span <eom>)*
                ctx, tgt, drop = piece[: k - 1], piece[k + 1 :], {tok.eom_id}
            else:  # ctx <sep> (<mask_k> span)* <|endoftext|>
                ctx, tgt, drop = piece[:k], piece[k + 1 : -1], set()
            spans: dict[int, list[int]] = {}
            cur = None
            for t in tgt:
                if t in tok.sentinel_ids:
                    cur = tok.sentinel_ids.index(t)
                    spans[cur] = []
                elif t in drop:
                    cur = None
                else:
                    spans[cur].append(t)
            for t in ctx:
                rebuilt += spans[tok.sentinel_ids.index(t)] if t in tok.sentinel_ids else [t]
            # sentinel pairing within the piece: each context sentinel has exactly one span
            assert sorted(tok.sentinel_ids.index(t) for t in ctx if t in tok.sentinel_ids) == sorted(spans)
        assert rebuilt == w.tokens.tolist(), name


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_loss_weights_as_specified(tiny_tokenizer, seed):
    tok = tiny_tokenizer
    for name in objective_names():
        _, raw, ex = make(name, tok, seed=seed)
        scored = ex.labels != IGNORE
        assert torch.all(ex.loss_weights[~scored] == 0)
        if name in SHIFTED:  # a per-example mean over targets
            assert abs(float(ex.loss_weights.sum()) - 1.0) < 1e-5
        elif name == "masked_diffusion" and bool(scored.any()):  # 1/t on masked tokens, normalised by length
            w = ex.loss_weights[scored]
            assert torch.allclose(w, w[0].expand_as(w))
            t = 1.0 / (float(w[0]) * len(raw.tokens))
            assert 1e-3 <= t <= 1.0 + 1e-6
        if name in ("causal", "agent_sft_ar"):
            toks = ex.input_ids.tolist()
            for i in scored.nonzero().flatten().tolist():
                assert ex.labels[i] == toks[i + 1]


def test_agent_ar_scores_actions_only(tiny_tokenizer):
    _, raw, ex = make("agent_sft_ar", tiny_tokenizer)
    targets = {i + 1 for i in (ex.labels != IGNORE).nonzero().flatten().tolist()}
    assert targets == {i for i, a in enumerate(raw.is_action) if a}


@pytest.mark.parametrize("name,params", [("agent_sft_ar", {}), ("agent_sft_diffusion", {}),
                                         ("agent_sft_diffusion", {"aligned": False})])
def test_context_weight_scores_context_tokens(tiny_tokenizer, name, params):
    """context_weight adds an LM loss on context tokens only, of that total weight when causal."""
    raw = trajectory(tiny_tokenizer)
    context = {i for i, a in enumerate(raw.is_action) if not a}
    base = build_objective(name, tiny_tokenizer, **params)(raw, np.random.default_rng(5))
    ex = build_objective(name, tiny_tokenizer, context_weight=0.5, **params)(raw, np.random.default_rng(5))
    L, in_place = len(raw.token_ids), params.get("aligned") is False
    shift = 0 if in_place else 1  # masked in place vs next-token on the causal clean stream
    ctx = [i for i in range(L - shift) if ex.labels[i] != IGNORE and i + shift in context]
    assert ctx and all(int(ex.labels[i]) == raw.token_ids[i + shift] for i in ctx)
    assert not any(base.labels[i] != IGNORE for i in ctx)  # off by default
    if not in_place:
        assert float(ex.loss_weights[ctx].sum()) == pytest.approx(0.5)
        assert torch.equal(ex.labels[L:], base.labels[L:])  # the action loss is untouched


@pytest.mark.parametrize("shift", [False, True])
def test_ar_weight_scores_clean_actions_next_token(tiny_tokenizer, shift):
    """ar_weight adds a next-token loss of that total weight on the clean stream's action tokens and
    leaves the diffusion loss on the noisy half as it was."""
    raw = trajectory(tiny_tokenizer)
    L = len(raw.token_ids)
    base = build_objective("agent_sft_diffusion", tiny_tokenizer, shift=shift)(raw, np.random.default_rng(5))
    ex = build_objective("agent_sft_diffusion", tiny_tokenizer, ar_weight=0.7, shift=shift)(raw, np.random.default_rng(5))
    actions = [i for i in range(L - 1) if raw.is_action[i + 1]]
    assert all(int(ex.labels[i]) == raw.token_ids[i + 1] for i in actions)
    assert not any(ex.labels[i] != IGNORE for i in range(L - 1) if not raw.is_action[i + 1])
    added = ex.loss_weights[:L] - base.loss_weights[:L]  # shifted: a block's first target may sit here too
    assert float(added.sum()) == pytest.approx(0.7)
    assert torch.equal(ex.labels[L:], base.labels[L:]) and torch.equal(ex.loss_weights[L:], base.loss_weights[L:])
    with pytest.raises(ValueError, match="aligned"):
        build_objective("agent_sft_diffusion", tiny_tokenizer, ar_weight=0.7, aligned=False)


def test_untrainable_action_is_context_for_every_trajectory_objective(tiny_tokenizer):
    """A logged mistake (trainable=False) is scored by no objective and never noised."""
    turns = [
        Turn("system", "Use the tools."),
        Turn("user", "Default of indent in json.dumps?"),
        Turn("assistant", '<tool_call>{"name": "search", "arguments": {"query": "jszq"}}</tool_call>', False),
        Turn("tool", "no results"),
        Turn("assistant", '<tool_call>{"name": "answer", "arguments": {"text": "None"}}</tool_call>'),
    ]
    raw = render_turns(turns, tiny_tokenizer)
    miss = [i for i, t in enumerate(raw.turn_ids) if t == 2]
    assert miss and not any(raw.is_action[i] for i in miss) and any(raw.is_action)
    assert Turn.from_dict(turns[2].to_dict()) == turns[2] and "trainable" not in turns[4].to_dict()
    action = {i for i, x in enumerate(raw.is_action) if x}
    ar = build_objective("agent_sft_ar", tiny_tokenizer)(raw, np.random.default_rng(0))
    assert {i + 1 for i in (ar.labels != IGNORE).nonzero().flatten().tolist()} == action
    L = len(raw.token_ids)
    al = build_objective("agent_sft_diffusion", tiny_tokenizer, pad_final_block=False)(raw, np.random.default_rng(0))
    assert al.input_ids[:L].tolist() == raw.token_ids  # the miss stays in the clean context, verbatim
    assert len(al.input_ids) - L == len(action)  # and only the trainable action is copied and noised
    un = build_objective("agent_sft_diffusion", tiny_tokenizer, aligned=False)(raw, np.random.default_rng(0))
    assert {i for i in (un.labels != IGNORE).nonzero().flatten().tolist()} <= action


def test_bad_params_are_clear_errors(tiny_tokenizer):
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("nope", tiny_tokenizer)
    with pytest.raises(ValueError, match="bad parameters"):
        build_objective("causal", tiny_tokenizer, typo=1)
    with pytest.raises(ValueError, match="ar_weight"):
        build_objective("block_diffusion", tiny_tokenizer, clean_attention="block", ar_weight=1.0)


def _snapshot(tok) -> dict:
    out = {}
    for name in objective_names():
        _, _, ex = make(name, tok, seed=1, **({"fim_rate": 1.0} if name == "fim" else {}))
        out[name] = {
            "text": tok.decode(ex.input_ids.tolist()),
            "labels": ex.labels.tolist(),
            "block_ids": ex.block_ids.tolist(),
            "noisy": [int(x) for x in ex.noisy.tolist()],
            "doc_ids": ex.doc_ids.tolist(),
        }
    return out


def test_golden_examples(tiny_tokenizer):
    """Every format, exactly, for a fixed input and seed (regenerate with UNIMASK_REGEN_GOLDEN=1)."""
    import os

    snap = _snapshot(tiny_tokenizer)
    if os.environ.get("UNIMASK_REGEN_GOLDEN") or not GOLDEN.exists():
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(snap, indent=1, ensure_ascii=False))
    golden = json.loads(GOLDEN.read_text())
    for name in objective_names():
        assert snap[name] == golden[name], name
    assert "<mask_1>" in golden["codegen2_infill"]["text"] and "<sep>" in golden["codegen2_infill"]["text"]
    assert "<eom>" in golden["codegen2_infill"]["text"]
    assert "<fim_middle>" in golden["fim"]["text"]


@pytest.mark.parametrize("name,params", [
    ("block_diffusion", {"block_size": 8, "ar_weight": 0.5}),
    ("agent_sft_diffusion", {"block_size": 4, "context_weight": 0.5}),
    ("copy_diffusion", {"repeats": 2, "min_span": 4, "max_span": 8, "block_size": 4}),
    ("masked_diffusion", {}),
])
def test_shifted_targets_sit_one_position_before_their_mask(tiny_tokenizer, name, params):
    """``shift=True`` is the unshifted example with every diffusion target moved to its predecessor:
    same inputs and attention; each masked token's clean value is predicted by the position at RoPE
    position p - 1 (its own noisy block, or the clean token before the block); weight is conserved
    except for targets with no predecessor."""
    tok = tiny_tokenizer
    _, _, plain = make(name, tok, seed=5, **params)
    _, _, sh = make(name, tok, seed=5, shift=True, **params)
    for f in ("input_ids", "doc_ids", "block_ids", "noisy", "position_ids"):
        assert torch.equal(getattr(plain, f), getattr(sh, f)), f
    one_stream = not bool(plain.noisy.any())
    diffusion = (plain.labels != IGNORE) & (plain.noisy | one_stream)
    moved = 0.0
    for i in diffusion.nonzero().flatten().tolist():
        assert plain.input_ids[i] == tok.mask_id
        stream = (plain.noisy == plain.noisy[i]) & (plain.block_ids == plain.block_ids[i]) if plain.noisy[i] \
            else ~plain.noisy
        pred = (stream & (plain.doc_ids == plain.doc_ids[i]) & (plain.position_ids == plain.position_ids[i] - 1))
        if not bool(pred.any()):
            pred = (~plain.noisy) & (plain.doc_ids == plain.doc_ids[i]) & (plain.position_ids == plain.position_ids[i] - 1)
        if not bool(pred.any()):
            continue
        j = int(pred.nonzero()[0])
        assert sh.labels[j] == plain.labels[i]
        moved += float(plain.loss_weights[i])
    assert moved > 0
    kept = float(plain.loss_weights[~diffusion].sum())
    assert sh.loss_weights.sum().item() == pytest.approx(kept + moved, rel=1e-5)
