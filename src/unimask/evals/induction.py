"""The induction metric: can a model copy a span of real text it has seen earlier in its context?

Probes are held-out windows with one span repeated (``unimask.objectives.copy.draw_copy``), drawn
once with a fixed seed so every checkpoint is scored on the same ones.

* ``ar_induction``: teacher-forced, causal. Top-1 accuracy on the repeat's tokens 2..n and the
  mean loss on those tokens at their first and at their second occurrence; the loss drop
  (first - second) is the classic in-context-learning signature of induction heads.
* ``diffusion_induction``: the repeat after its first token is masked and decoded by the
  diffusion sampler with the agent's decoding settings; accuracy of the decoded tokens and the
  share of spans decoded exactly.

Both take a model and return plain floats; ``induction_hook`` wraps them for the trainer's
evaluation callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unimask.objectives.copy import CopyLayout, draw_copy


def copy_probes(data_dir: str | Path, seq_len: int, n: int = 64, seed: int = 1234, min_span: int = 8,
                max_span: int = 24, split: str = "val") -> list[CopyLayout]:
    """``n`` held-out windows of ``seq_len`` tokens, each with one span repeated."""
    from unimask.data import PackedLoader

    rng = np.random.default_rng(seed)
    probes: list[CopyLayout] = []
    for w in PackedLoader(data_dir, split, seq_len, epochs=1, shuffle=False):
        if int((w.doc_ids >= 0).sum()) >= 2 * min_span + 1:
            probes.append(draw_copy(w.tokens, w.doc_ids, rng, min_span, max_span))
        if len(probes) >= n:
            break
    if not probes:
        raise ValueError(f"no {split} windows of {seq_len} tokens in {data_dir} to build copy probes from")
    return probes


@torch.no_grad()
def ar_induction(model: torch.nn.Module, probes: Sequence[CopyLayout], batch_size: int = 16) -> dict[str, float]:
    """Teacher-forced copy accuracy and first- vs second-occurrence loss (see the module docstring)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits = total = 0
    first: list[float] = []
    second: list[float] = []
    for i in range(0, len(probes), batch_size):
        group = probes[i : i + batch_size]
        ids = torch.stack([p.tokens for p in group]).to(device)
        logp = F.log_softmax(model(ids).float(), dim=-1)
        for b, p in enumerate(group):
            for start, out in ((p.source, first), (p.start, second)):
                pos = torch.arange(start, start + p.length - 1, device=device)  # predicts tokens 2..n
                target = ids[b, pos + 1]
                out.append(float(-logp[b, pos, target].mean()))
                if start == p.start:
                    hits += int((logp[b, pos].argmax(-1) == target).sum())
                    total += len(pos)
    model.train(was_training)
    return {"copy_acc": hits / max(total, 1), "loss_first": float(np.mean(first)),
            "loss_second": float(np.mean(second)), "loss_drop": float(np.mean(first) - np.mean(second))}


@torch.no_grad()
def diffusion_induction(backbone: Any, probes: Sequence[CopyLayout], **decoding: Any) -> dict[str, float]:
    """Copy accuracy of the diffusion sampler decoding each repeat (after its first token) from masks."""
    was_training = backbone.model.training
    backbone.model.eval()
    hits = total = exact = nfe = 0
    for p in probes:
        prompt = p.tokens[: p.start + 1].tolist()
        target = p.tokens[p.start + 1 : p.start + p.length].tolist()
        gen = backbone.generate([""], prompt_ids=[prompt], max_new_tokens=len(target), **decoding)[0]
        got = gen.token_ids[: len(target)]
        match = sum(int(a == b) for a, b in zip(got, target, strict=False))
        hits += match
        total += len(target)
        exact += int(match == len(target))
        nfe += gen.nfe
    backbone.model.train(was_training)
    return {"copy_acc": hits / max(total, 1), "exact_span": exact / len(probes),
            "tokens_per_pass": total / max(nfe, 1)}


def induction_hook(probes: Sequence[CopyLayout], diffusion: dict[str, Any] | None = None,
                   tokenizer: Any = None) -> Callable[[torch.nn.Module], dict[str, float]]:
    """A trainer evaluation callback: ``model -> {"induction/...": value}``.

    ``diffusion``: the block-diffusion decoding settings (``block_length``, ``threshold``) when the
    model being trained is a DLLM; its AR (clean-stream) metric is logged as well.
    """
    from unimask.sampling.diffusion import DiffusionBackbone

    def hook(model: torch.nn.Module) -> dict[str, float]:
        was_training = model.training
        out = {f"induction/ar_{k}": v for k, v in ar_induction(model, probes).items()}
        if diffusion is not None:
            settings = dict(diffusion)
            backbone = DiffusionBackbone(model, tokenizer, mode="block",
                                         block_length=int(settings.pop("block_length")),
                                         shift=bool(settings.pop("shift", False)))
            res = diffusion_induction(backbone, probes, **settings)
            out.update({f"induction/diffusion_{k}": v for k, v in res.items()})
        model.train(was_training)
        return out

    return hook
