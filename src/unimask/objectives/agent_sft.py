"""Multi-turn agent SFT over rendered trajectories (``TurnSequence``), for both backbones.

* ``agent_sft_ar``: causal attention; next-token loss on action tokens only.
* ``agent_sft_diffusion`` (aligned, the default): the clean trajectory x_0 (causal) followed by
  noised copies of every action, cut into blocks of ``block_size`` that start at the action's
  first token. A noised block sees its own block and the clean tokens strictly before it -- all
  earlier turns, its own ``<|assistant|>`` marker and the earlier blocks of the same action --
  and nothing after its own turn; no clean token ever sees a noised one. Every action of the
  trajectory is trained in one pass. This is exactly the view a context-causal block-diffusion
  sampler has at inference: a clean, KV-cached context and one block of masks decoded with full
  attention inside the block.
* ``aligned=False``: the ablation the DLLM Agent paper warns about -- the action tokens are
  noised in place in the single sequence, under plain bidirectional attention, so context tokens
  attend to noised actions and every token sees later turns.

Loss: masked action tokens weighted 1/t (t drawn per block, or per trajectory when unaligned),
normalised by the number of action tokens.

``context_weight`` (both backbones, default 0) adds a language-modelling loss on the *context*
tokens (question, tool observations), normalised by their number: next-token prediction on the
causal clean stream for AR and aligned diffusion, masked-token prediction in place when
unaligned. Observations repeat what actions named (an opened id, a searched name), so this is
cheap extra supervision for copying, which small, briefly pre-trained models otherwise lack.

``ar_weight`` (aligned diffusion only, default 0) adds a next-token loss on the clean stream's
*action* tokens: the AR loss on the clean half that context-causal block diffusion models train
with (Fast-dLLM v2), here aimed at the actions, so that each name token is also learnt as a copy
from its whole clean prefix -- the conditioning a shifted sampler sees once the token before it
is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from unimask.model.attention import AttentionStructure
from unimask.objectives.base import normalised_weights
from unimask.objectives.contract import AR_DECODER, DecoderSpec, Reads
from unimask.objectives.diffusion import (
    draw_block_noise,
    noisy_copy_layout,
    noisy_targets,
    sample_t,
    shift_targets,
)
from unimask.objectives.example import IGNORE, TrainingExample
from unimask.tokenizer.chat import TurnSequence


def action_spans(seq: TurnSequence) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of maximal runs of action tokens."""
    spans, start = [], None
    for i, a in enumerate([*seq.is_action, False]):
        if a and start is None:
            start = i
        elif not a and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _check(seq: TurnSequence) -> None:
    if not any(seq.is_action):
        raise ValueError("trajectory has no assistant (action) turn to train on")


def _clean_lm(ids: torch.Tensor, action: torch.Tensor, context_weight: float,
              action_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token labels on a causal clean stream: context targets with weights summing to
    ``context_weight``, action targets with weights summing to ``action_weight``."""
    labels, weights = torch.full_like(ids, IGNORE), torch.zeros(len(ids))
    for is_action, w in ((False, context_weight), (True, action_weight)):
        if w > 0:
            part = torch.full_like(ids, IGNORE)
            part[:-1] = torch.where(action[1:] == is_action, ids[1:], part[:-1])
            labels = torch.where(part == IGNORE, labels, part)
            weights = weights + normalised_weights(part, w)
    return labels, weights


@dataclass
class AgentSFTAR:
    context_weight: float = 0.0
    name: str = "agent_sft_ar"
    reads: ClassVar[Reads] = "trajectory"

    def decoder(self) -> DecoderSpec:
        return AR_DECODER

    def max_length(self, n: int) -> int:
        return n

    def __call__(self, raw: TurnSequence, rng: np.random.Generator) -> TrainingExample:
        _check(raw)
        ids = torch.tensor(raw.token_ids, dtype=torch.long)
        action = torch.tensor(raw.is_action, dtype=torch.bool)
        labels = torch.full_like(ids, IGNORE)
        labels[:-1] = torch.where(action[1:], ids[1:], labels[:-1])
        weights = normalised_weights(labels)
        if self.context_weight > 0:
            ctx_labels, ctx_weights = _clean_lm(ids, action, self.context_weight)
            labels = torch.where(labels == IGNORE, ctx_labels, labels)
            weights = weights + ctx_weights
        att = AttentionStructure.causal(1, len(ids))
        return TrainingExample.from_structure(ids, labels, weights, att, self.name)


@dataclass
class AgentSFTDiffusion:
    tokenizer: object
    block_size: int = 16
    aligned: bool = True
    pad_final_block: bool = True  # fill each action's last block with <|pad|> targets, as decoded
    context_weight: float = 0.0
    # next-token loss on the clean stream's action tokens (aligned only): the AR loss on the clean
    # context of Fast-dLLM v2-style block diffusion, here on the actions, so names are also learnt
    # as AR copies from their full prefix
    ar_weight: float = 0.0
    eps: float = 1e-3
    shift: bool = False  # Dream-style shifted targets (objectives.diffusion.shift_targets)
    name: str = "agent_sft_diffusion"
    reads: ClassVar[Reads] = "trajectory"

    def __post_init__(self) -> None:
        if self.ar_weight > 0 and not self.aligned:
            raise ValueError("ar_weight needs the aligned layout (its causal clean stream); the unaligned "
                             "ablation has no clean copy of the actions to score")

    def decoder(self) -> DecoderSpec:
        if not self.aligned:  # the unaligned ablation: plain bidirectional attention
            return DecoderSpec("masked_diffusion", shift=self.shift)
        # the aligned layout is context-causal: clean context causal, full attention inside a block
        return DecoderSpec("block_diffusion", self.block_size, "causal", self.shift)

    def max_length(self, n: int) -> int:
        return 2 * n + (n // 2 if self.pad_final_block else 0) if self.aligned else n

    def __call__(self, raw: TurnSequence, rng: np.random.Generator) -> TrainingExample:
        ex = self._unshifted(raw, rng)
        return shift_targets(ex) if self.shift else ex

    def _unshifted(self, raw: TurnSequence, rng: np.random.Generator) -> TrainingExample:
        _check(raw)
        x0 = torch.tensor(raw.token_ids, dtype=torch.long)
        action = torch.tensor(raw.is_action, dtype=torch.bool)
        n_action = int(action.sum())
        mask_id = self.tokenizer.mask_id
        if not self.aligned:
            t = sample_t(rng, self.eps)
            drawn = torch.from_numpy(rng.random(len(x0)) < t)
            masked = drawn & (action | (self.context_weight > 0))
            ids = torch.where(masked, torch.full_like(x0, mask_id), x0)
            labels = torch.where(masked, x0, torch.full_like(x0, IGNORE))
            n_context = max(len(x0) - n_action, 1)
            weights = masked.float() / t * torch.where(action, 1 / n_action, self.context_weight / n_context)
            att = AttentionStructure.bidirectional(1, len(x0))
            return TrainingExample.from_structure(ids, labels, weights, att, self.name)
        segments, masks, ts = draw_block_noise(action_spans(raw), self.block_size, rng, self.eps)
        doc = torch.zeros(len(x0), dtype=torch.long)
        ids, att, twins = noisy_copy_layout(x0, doc, segments, masks, mask_id, "causal")
        L = len(x0)
        labels, weights = noisy_targets(x0, ids, twins, segments, masks, ts, n_action)
        if self.context_weight > 0 or self.ar_weight > 0:
            labels[:L], weights[:L] = _clean_lm(x0, action, self.context_weight, self.ar_weight)
        ex = TrainingExample.from_structure(ids, labels, weights, att, self.name)
        if self.pad_final_block:
            ex = self._pad_blocks(ex, segments, ts, n_action, rng)
        return ex

    def _pad_blocks(self, ex: TrainingExample, segments: list[tuple[int, int]], ts: list[float], n_action: int,
                    rng: np.random.Generator) -> TrainingExample:
        """A sampler decodes whole blocks: teach the positions after an action's end to be padding.

        Each action's last, partial block gets noisy extension tokens at the positions that follow it
        (same block id, so they see exactly what the block sees) with ``<|pad|>`` targets.
        """
        parts: dict[str, list[torch.Tensor]] = {k: [getattr(ex, k)] for k in
                                                 ("input_ids", "labels", "loss_weights", "doc_ids", "block_ids",
                                                  "noisy", "position_ids")}
        pad = self.tokenizer.pad_id
        for i, (s, e) in enumerate(segments):
            last = i + 1 == len(segments) or segments[i + 1][0] != e
            n = self.block_size - (e - s)
            if not last or n <= 0:
                continue
            masked = torch.from_numpy(rng.random(n) < ts[i])
            parts["input_ids"].append(torch.where(masked, torch.tensor(self.tokenizer.mask_id), torch.tensor(pad)))
            parts["labels"].append(torch.where(masked, torch.tensor(pad), torch.tensor(IGNORE)))
            parts["loss_weights"].append(masked.float() / (ts[i] * n_action))
            parts["doc_ids"].append(torch.zeros(n, dtype=torch.long))
            parts["block_ids"].append(torch.full((n,), s, dtype=torch.long))
            parts["noisy"].append(torch.ones(n, dtype=torch.bool))
            parts["position_ids"].append(torch.arange(e, e + n))
        return TrainingExample(**{k: torch.cat(v) for k, v in parts.items()}, objective=self.name)
