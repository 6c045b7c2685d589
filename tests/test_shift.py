"""Shifted (Dream-style) targets: each masked token is scored at its predecessor's logits."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from unimask.objectives import build_objective
from unimask.objectives.example import IGNORE
from unimask.objectives.shift import shift_targets


def _window(n: int = 16) -> SimpleNamespace:
    return SimpleNamespace(tokens=torch.arange(40, 40 + n), doc_ids=torch.zeros(n, dtype=torch.long))


def test_masked_diffusion_targets_move_one_position_back(tiny_tokenizer) -> None:
    obj = build_objective("masked_diffusion", tiny_tokenizer)
    ex = next(e for e in (obj(_window(), np.random.default_rng(s)) for s in range(50)) if (e.labels != IGNORE).sum() > 4)
    out = shift_targets(ex, tiny_tokenizer.mask_id)
    masked = (ex.labels != IGNORE).nonzero().flatten().tolist()
    for q in masked:
        if q > 0:
            assert out.labels[q - 1] == ex.labels[q] and out.loss_weights[q - 1] == ex.loss_weights[q]
    assert set((out.labels != IGNORE).nonzero().flatten().tolist()) == {q - 1 for q in masked if q > 0}


def test_block_diffusion_first_masked_token_is_predicted_by_the_clean_token_before(tiny_tokenizer) -> None:
    obj = build_objective("block_diffusion", tiny_tokenizer, block_size=4, ar_weight=0.5)
    ex = obj(_window(), np.random.default_rng(0))
    out = shift_targets(ex, tiny_tokenizer.mask_id)
    L = 16
    index, found = ex.attention.predecessors()
    for q in ((ex.labels != IGNORE) & (ex.input_ids == tiny_tokenizer.mask_id)).nonzero().flatten().tolist():
        p = int(index[0, q])
        if not found[0, q]:
            continue
        assert out.labels[p] == ex.labels[q]
        pos = int(ex.position_ids[q])
        if pos % 4 == 0:  # first of its block: the predecessor is the clean twin of the previous position
            assert p < L and int(ex.position_ids[p]) == pos - 1
    # the AR labels of the clean half are untouched where no masked target landed on them
    ar = (ex.labels[:L] != IGNORE)
    assert torch.equal(out.labels[:L][ar], ex.labels[:L][ar])
    kept = found[0] | (ex.input_ids != tiny_tokenizer.mask_id)  # only targets without a predecessor are dropped
    assert abs(float(out.loss_weights.sum()) - float(ex.loss_weights[kept].sum())) < 1e-5
