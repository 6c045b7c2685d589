"""CodeGen2 ablation pieces: held-out single-line infill tasks, the CodeGen2 prompt, exact match."""

from __future__ import annotations

import torch

from unimask.config import load_config
from unimask.experiments.codegen2_ablation import (
    CONFIG_DIR,
    InfillTask,
    infill_exact_match,
    make_infill_tasks,
    with_copying,
)
from unimask.train.config import TrainConfig


def test_infill_tasks_are_whole_lines(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    text = "".join(f"def f{i}(x):\n    return x + {i} * 2\n\n" for i in range(12))
    tasks = make_infill_tasks([tok.encode(text)], tok, n=5, seed=1)
    assert len(tasks) == 5
    for t in tasks:
        assert "\n" in tok.decode(t.prefix[-1:]) and "\n" in tok.decode(t.suffix[:1])
        assert "\n" not in tok.decode(t.middle)
        assert tok.decode(t.middle).strip() in text


class _Scripted(torch.nn.Module):
    """Emits a fixed continuation after whatever prompt it first sees; records the prompts."""

    def __init__(self, vocab: int, scripts: dict[tuple[int, ...], list[int]]) -> None:
        super().__init__()
        self.vocab, self.scripts, self.prompts = vocab, scripts, []

    def forward(self, ids: torch.Tensor, attention=None, kv_cache=None) -> torch.Tensor:
        seq = ids[0].tolist()
        for prompt, script in self.scripts.items():
            if tuple(seq[: len(prompt)]) == prompt and len(seq) - len(prompt) < len(script):
                if len(seq) == len(prompt):
                    self.prompts.append(prompt)
                logits = torch.zeros(1, len(seq), self.vocab)
                logits[0, -1, script[len(seq) - len(prompt)]] = 1.0
                return logits
        raise AssertionError(f"unexpected prompt {seq}")


def test_exact_match_uses_the_codegen2_format_and_stops(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    pre, mid, suf = tok.encode("x = 1\n"), tok.encode("    y = x + 2"), tok.encode("\nprint(y)\n")
    task = InfillTask(pre, mid, suf)
    m1 = tok.sentinel_ids[0]
    infill_prompt = tuple(pre + [m1] + suf + [tok.eos_id, tok.sep_id, m1])
    newline = tok.encode("\n")
    right = _Scripted(tok.vocab_size, {infill_prompt: mid + [tok.eom_id], tuple(pre): mid + newline})
    assert infill_exact_match(right, tok, [task], torch.device("cpu")) == {
        "infill_em": 1.0, "completion_em": 1.0, "n_tasks": 1}
    assert right.prompts == [infill_prompt, tuple(pre)]
    wrong = _Scripted(tok.vocab_size, {infill_prompt: mid[:-1] + [tok.eom_id], tuple(pre): mid + tok.encode("0\n")})
    assert infill_exact_match(wrong, tok, [task], torch.device("cpu"))["infill_em"] == 0.0
    assert infill_exact_match(wrong, tok, [task], torch.device("cpu"))["completion_em"] == 0.0


def test_arms_on_the_copy_recipe_keep_their_own_mixture_in_proportion() -> None:
    plain = load_config(TrainConfig, CONFIG_DIR / "causal_infill.yaml")
    assert with_copying(load_config(TrainConfig, CONFIG_DIR / "causal_infill.yaml"), 0.0) == plain
    cfg = with_copying(load_config(TrainConfig, CONFIG_DIR / "causal_infill.yaml"), 0.4)
    assert [(o.name, o.weight) for o in cfg.objectives] == [("codegen2", 0.6), ("copy", 0.4)]
    assert cfg.objectives[0].params == plain.objectives[0].params and cfg.model.overrides["smear"] is True
