"""The trainer's hot loop: losses stay on the device between log intervals (no host sync on a
step that does not log) with logged values bit-identical to an explicit plain loop, and
``model.compile`` on CPU for the causal and block-diffusion (structured mask) objectives."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).parent))
from test_train_support import ListSource, stdlib_windows, tiny_config  # noqa: E402
from unimask.train.optim import build_optimizer, lr_at  # noqa: E402
from unimask.train.trainer import Trainer, train  # noqa: E402

BLOCK_DIFFUSION = [{"name": "block_diffusion", "params": {"block_size": 8}}]


@pytest.fixture(scope="module")
def windows(tiny_tokenizer):
    return stdlib_windows(tiny_tokenizer)


def _plain_loop(cfg, tokenizer, windows) -> tuple[list[float], list[int]]:
    """The same run written out by hand: per step, accumulate, clip, AdamW, read the loss at once
    (the loss through the model's fused head, as the trainer computes it; that head's equality with
    logits-then-loss is tests/test_model.py's). Returns the per-step losses and the cumulative
    real-token counts."""
    trainer = Trainer(cfg, tokenizer=tokenizer, train_source=ListSource(windows))  # same seeded weights and stream
    model = trainer.raw_model
    model.train()
    opt = build_optimizer(model, cfg.optim, trainer.device)
    losses, tokens = [], [0]
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.optim)
        batches = trainer.stream.step_batches()
        total = torch.zeros(())
        for b in batches:
            attention = None if b.attention.is_plain_causal() else b.attention
            loss = model(b.input_ids, attention, labels=b.labels, loss_weights=b.loss_weights)
            (loss / cfg.grad_accum).backward()
            total += loss.detach()
            tokens[-1] += int((b.attention.doc_ids >= 0).sum())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(total / len(batches)))
        tokens.append(tokens[-1])
    return losses, tokens[:-1]


@pytest.mark.parametrize("objectives", [[{"name": "causal"}], BLOCK_DIFFUSION], ids=["causal", "block_diffusion"])
def test_losses_read_at_log_intervals_are_bit_identical(tmp_path, tiny_tokenizer, windows, objectives) -> None:
    cfg = tiny_config(tmp_path / "run", steps=7, log_interval=3, checkpoint_interval=0, objectives=objectives)
    reference, tokens = _plain_loop(cfg, tiny_tokenizer, windows)
    res = train(cfg, tokenizer=tiny_tokenizer, train_source=ListSource(windows))
    assert res.losses == reference  # every step's loss, exactly, not just the logged ones
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in records] == [(s, reference[s - 1]) for s in (3, 6, 7)]
    assert [r["tokens"] for r in records] == [tokens[s - 1] for s in (3, 6, 7)] and res.tokens == tokens[-1]


class ScalarReads(TorchDispatchMode):
    """Counts reads of a floating-point tensor's value into Python (``float()``, ``.item()``: the
    ops that would wait for a device), per trainer step; ``mark()`` opens the next step."""

    def __init__(self) -> None:
        super().__init__()
        self.per_step: list[int] = []

    def mark(self) -> None:
        self.per_step.append(0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_floating_point() and self.per_step:
            self.per_step[-1] += 1
        return func(*args, **(kwargs or {}))


def test_steps_between_log_intervals_read_nothing_back(tmp_path, tiny_tokenizer, windows) -> None:
    """Losses, token counts and the grad norm are read only on the steps that log (4 and 8)."""
    cfg = tiny_config(tmp_path / "run", steps=8, log_interval=4, checkpoint_interval=0)
    trainer = Trainer(cfg, tokenizer=tiny_tokenizer, train_source=ListSource(windows))
    reads = ScalarReads()
    step_batches = trainer.stream.step_batches

    def marked():
        reads.mark()
        return step_batches()

    trainer.stream.step_batches = marked
    with reads:
        res = trainer.fit()
    assert res.step == 8 and len(res.losses) == 8
    assert [n > 0 for n in reads.per_step] == [False, False, False, True] * 2


@pytest.mark.slow  # inductor's C++ compile of forward and backward: minutes on 2 loaded cores, cold cache
@pytest.mark.parametrize("objectives", [[{"name": "causal"}], BLOCK_DIFFUSION], ids=["causal", "block_diffusion"])
def test_compile_on_cpu_trains_like_eager(tmp_path, tiny_tokenizer, windows, objectives) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    runs = {}
    for compiled in (False, True):
        cfg = tiny_config(tmp_path / str(compiled), steps=3, checkpoint_interval=0, objectives=objectives,
                          model__compile=compiled)
        runs[compiled] = train(cfg, tokenizer=tiny_tokenizer, train_source=ListSource(windows)).losses
    assert counters["stats"]["unique_graphs"] > 0  # it did compile
    assert all(math.isfinite(x) for x in runs[True])
    assert runs[True] == pytest.approx(runs[False], rel=1e-4, abs=1e-4)
