"""Fallback components for the CodeGen2 ablation and the trainer benchmark.

The ablation is meant to run on ``unimask.model.Transformer`` with objectives from
``unimask.objectives``. Where those packages do not (yet) provide that API, this module supplies
what the experiment needs, stated once and small:

* ``HFStructuredLM``: ``transformers.LlamaForCausalLM`` behind unimask's forward signature
  ``(input_ids, attention=None, kv_cache=None)``, with the ``AttentionStructure`` passed as a 4-D
  boolean mask and its per-token positions (so prefix-LM's bidirectional prefix is honoured);
* ``causal``, ``codegen2_infill`` and ``prefix_lm`` objectives over packed windows, following the
  CodeGen2 recipe (file-level span corruption: every document piece of a window is corrupted on
  its own as ``a <mask_1> b <mask_2> c <eos> <sep> <mask_1> s1 <eom> <mask_2> s2 <eom>``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from unimask.model.attention import AttentionStructure, positions_from_segments
from unimask.objectives.example import IGNORE, TrainingExample


class HFStructuredLM(torch.nn.Module):
    """A Llama causal LM from ``transformers`` that consumes unimask attention structures."""

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 ffn: int | None = None, max_seq_len: int = 512) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.config = LlamaConfig(
            vocab_size=vocab_size, hidden_size=d_model, intermediate_size=ffn or 4 * d_model,
            num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
            max_position_embeddings=max_seq_len, attn_implementation="sdpa", tie_word_embeddings=False,
        )
        self.lm = LlamaForCausalLM(self.config)

    def forward(self, input_ids: torch.Tensor, attention: AttentionStructure | None = None,
                kv_cache: Any = None) -> torch.Tensor:
        if kv_cache is not None:
            raise ValueError("HFStructuredLM has no unimask KV cache; decode with full forwards")
        if attention is None:
            return self.lm(input_ids=input_ids).logits
        mask = attention.dense_mask()
        mask = mask[:, None] if mask.dim() == 3 else mask
        return self.lm(input_ids=input_ids, attention_mask=mask, position_ids=attention.position_ids).logits


def _doc_labels(ids: torch.Tensor, docs: torch.Tensor, scored_from: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token labels that never cross a document boundary; weights normalised to sum 1."""
    labels = torch.full_like(ids, IGNORE)
    same = docs[1:] == docs[:-1]
    labels[:-1] = torch.where(same, ids[1:], torch.full_like(ids[1:], IGNORE))
    labels[: max(0, scored_from)] = IGNORE
    weights = (labels != IGNORE).float()
    return labels, weights / weights.sum().clamp(min=1)


def _structure(docs: torch.Tensor, blocks: torch.Tensor) -> AttentionStructure:
    d = docs[None]
    return AttentionStructure(d, blocks[None], torch.zeros_like(d, dtype=torch.bool), positions_from_segments(d))


class Causal:
    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer

    def __call__(self, raw: Any, rng: np.random.Generator) -> TrainingExample:
        ids, docs = raw.tokens.long(), raw.doc_ids.long()
        labels, weights = _doc_labels(ids, docs)
        return TrainingExample.from_structure(ids, labels, weights, _structure(docs, torch.arange(len(ids))), "causal")

    def max_length(self, n: int) -> int:
        return n


class PrefixLM(Causal):
    """A uniformly drawn split: bidirectional attention over the prefix, next-token loss after it."""

    def __call__(self, raw: Any, rng: np.random.Generator) -> TrainingExample:
        ids, docs = raw.tokens.long(), raw.doc_ids.long()
        split = int(rng.integers(1, len(ids)))
        labels, weights = _doc_labels(ids, docs, scored_from=split - 1)
        blocks = torch.clamp(torch.arange(len(ids)) - split + 1, min=0)
        return TrainingExample.from_structure(ids, labels, weights, _structure(docs, blocks), "prefix_lm")


class CodeGen2Infill(Causal):
    """File-level span corruption: a masking ratio per piece, then span lengths, then positions."""

    max_spans = 3

    def _corrupt(self, body: list[int], rng: np.random.Generator) -> list[int]:
        tok = self.tok
        n = len(body)
        if n < 8:
            return body + [tok.eos_id]
        k = int(rng.integers(1, self.max_spans + 1))
        masked = max(k, int(round(rng.uniform(0.05, 0.5) * n)))
        cuts = np.sort(rng.choice(np.arange(1, masked), size=k - 1, replace=False)) if k > 1 else np.array([], int)
        lengths = np.diff(np.concatenate([[0], cuts, [masked]])).astype(int)
        # positions: distribute the unmasked tokens into k+1 gaps (each inner gap >= 1)
        free = n - masked - (k - 1)
        gaps = np.diff(np.concatenate([[0], np.sort(rng.integers(0, free + 1, size=k)), [free]])).astype(int)
        gaps[1:-1] += 1
        out, spans, pos = [], [], 0
        for i, length in enumerate(lengths):
            out += body[pos : pos + gaps[i]]
            pos += gaps[i]
            out.append(tok.sentinel_ids[i])
            spans += [tok.sentinel_ids[i], *body[pos : pos + length], tok.eom_id]
            pos += length
        out += body[pos:]
        return out + [tok.eos_id, tok.sep_id] + spans

    def __call__(self, raw: Any, rng: np.random.Generator) -> TrainingExample:
        ids, docs = raw.tokens.long().tolist(), raw.doc_ids.long()
        pieces: list[list[int]] = []
        for d in torch.unique_consecutive(docs).tolist():
            piece = [t for t, dd in zip(ids, docs.tolist(), strict=True) if dd == d]
            body = piece[:-1] if piece and piece[-1] == self.tok.eos_id else piece
            pieces.append(self._corrupt(body, rng))
        out = torch.tensor([t for p in pieces for t in p])
        new_docs = torch.tensor([i for i, p in enumerate(pieces) for _ in p])
        labels, weights = _doc_labels(out, new_docs)
        return TrainingExample.from_structure(out, labels, weights, _structure(new_docs, torch.arange(len(out))),
                                              "codegen2_infill")

    def max_length(self, n: int) -> int:
        return 2 * n + 8


FALLBACK_OBJECTIVES = {"causal": Causal, "prefix_lm": PrefixLM, "codegen2_infill": CodeGen2Infill}


def objective(name: str, tokenizer: Any, **params: Any) -> Any:
    """``unimask.objectives.build_objective`` when it exists, else this module's version."""
    try:
        from unimask.objectives import build_objective
    except ImportError:
        if name not in FALLBACK_OBJECTIVES:
            raise ValueError(f"objective {name!r} needs unimask.objectives; fallbacks: {sorted(FALLBACK_OBJECTIVES)}") from None
        return FALLBACK_OBJECTIVES[name](tokenizer)
    return build_objective(name, tokenizer, **params)


def have_unimask_model() -> bool:
    import unimask.model as m

    return all(hasattr(m, n) for n in ("Transformer", "save_checkpoint", "load_checkpoint"))
