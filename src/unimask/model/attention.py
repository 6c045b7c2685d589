"""Attention structure as data: who may attend to whom, described per token.

Every objective's attention pattern is four integer/bool tensors of shape ``[B, L]``:

* ``doc_ids``      -- tokens attend only within their own document (packing). Padding uses -1.
* ``block_ids``    -- a non-decreasing block index; a clean token sees clean tokens of its own
                      and earlier blocks. Causal = one block per token, bidirectional = one block,
                      prefix-LM = one block for the prefix then one per token, turns = one per turn.
* ``noisy``        -- marks tokens of a noised copy (block diffusion's x_t, or noised agent actions
                      in the aligned layout). A noisy token sees noisy tokens of its *own* block and
                      clean tokens of *strictly earlier* blocks; clean tokens never see noisy ones.
* ``position_ids`` -- RoPE positions (a noised copy reuses the positions of the clean tokens).

The rule, for query q and key k in the same document::

    clean q, clean k : block[k] <= block[q]
    noisy q, clean k : block[k] <  block[q]
    noisy q, noisy k : block[k] == block[q]
    clean q, noisy k : never

This single rule covers causal, prefix, bidirectional, document masking, block-causal over
turns and the BD3-LM x_t ⊕ x_0 training layout, so the model needs no objective flags.
``mask_mod`` states the rule once, for both the dense SDPA mask and ``flex_attention``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor


def allowed(
    doc_q: Tensor, doc_k: Tensor, blk_q: Tensor, blk_k: Tensor, noisy_q: Tensor, noisy_k: Tensor
) -> Tensor:
    """The attention rule, elementwise over broadcastable query/key tensors."""
    clean_clean = ~noisy_q & ~noisy_k & (blk_k <= blk_q)
    noisy_clean = noisy_q & ~noisy_k & (blk_k < blk_q)
    noisy_noisy = noisy_q & noisy_k & (blk_k == blk_q)
    return (doc_q == doc_k) & (clean_clean | noisy_clean | noisy_noisy)


@dataclass
class AttentionStructure:
    """Per-token attention description for a batch; see the module docstring for the rule."""

    doc_ids: Tensor  # long [B, L]
    block_ids: Tensor  # long [B, L]
    noisy: Tensor  # bool [B, L]
    position_ids: Tensor  # long [B, L]

    def __post_init__(self) -> None:
        shape = self.doc_ids.shape
        for f in fields(self):
            t = getattr(self, f.name)
            if t.dim() != 2 or t.shape != shape:
                raise ValueError(f"AttentionStructure.{f.name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if self.noisy.dtype != torch.bool:
            self.noisy = self.noisy.bool()

    # ------------------------------------------------------------------ shape helpers
    @property
    def batch_size(self) -> int:
        return self.doc_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.doc_ids.shape[1]

    def to(self, device: torch.device | str) -> AttentionStructure:
        return AttentionStructure(*(getattr(self, f.name).to(device) for f in fields(self)))

    def __getitem__(self, idx: slice | Tensor | int) -> AttentionStructure:
        """Select along the sequence dimension (e.g. ``s[:, :n]`` style via ``s[slice]``)."""
        return AttentionStructure(*(getattr(self, f.name)[:, idx] for f in fields(self)))

    @staticmethod
    def cat(parts: Sequence[AttentionStructure], dim: int = 1) -> AttentionStructure:
        return AttentionStructure(
            *(torch.cat([getattr(p, f.name) for p in parts], dim=dim) for f in fields(AttentionStructure))
        )

    def is_plain_causal(self) -> bool:
        """True when every row is one causal document with positions 0..L-1, so that SDPA's
        ``is_causal`` fast path computes exactly this structure (the model may skip the mask)."""
        ar = torch.arange(self.seq_len, device=self.doc_ids.device)
        return bool(
            (self.doc_ids == self.doc_ids[:, :1]).all()
            and (self.doc_ids >= 0).all()
            and not self.noisy.any()
            and (self.block_ids == ar).all()
            and (self.position_ids == ar).all()
        )

    # ------------------------------------------------------------------ masks
    def dense_mask(self, q_slice: slice | None = None) -> Tensor:
        """Boolean mask ``[B, 1, Lq, L]`` (True = may attend) for SDPA; ``q_slice`` picks query rows."""
        q = slice(None) if q_slice is None else q_slice
        return allowed(
            self.doc_ids[:, q, None],
            self.doc_ids[:, None, :],
            self.block_ids[:, q, None],
            self.block_ids[:, None, :],
            self.noisy[:, q, None],
            self.noisy[:, None, :],
        ).unsqueeze(1)

    def predecessors(self, q_start: int = 0, chunk: int = 1024, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Index and existence ``[B, Lq]`` of each query's predecessor, for queries ``q_start:``.

        The predecessor of query q is the key one RoPE position earlier that q may attend to;
        where two qualify (a clean and a noisy copy) the one of q's own kind wins. It is the
        previous token of a causal sequence, stops at document starts and padding, and inside a
        noised block (block diffusion, aligned agent actions) it is the previous noised token,
        or at the block's first position the clean token before it. Queries are processed in
        chunks so the ``[B, chunk, L]`` scratch stays small for long sequences. ``mask``, if given,
        is ``dense_mask(slice(q_start, None))`` as the caller already built it for attention.
        """
        index, found = [], []
        for lo in range(q_start, self.seq_len, chunk):
            q = slice(lo, min(lo + chunk, self.seq_len))
            allowed_keys = self.dense_mask(q) if mask is None else mask[:, :, lo - q_start : q.stop - q_start]
            candidate = allowed_keys.squeeze(1) & (
                self.position_ids[:, None, :] == self.position_ids[:, q, None] - 1
            )
            same_kind = candidate & (self.noisy[:, None, :] == self.noisy[:, q, None])
            score = candidate.to(torch.int8) + same_kind.to(torch.int8)
            index.append(score.argmax(-1))
            found.append(candidate.any(-1))
        return torch.cat(index, 1), torch.cat(found, 1)

    def mask_mod(self, q_offset: int = 0):
        """A ``flex_attention`` mask_mod closing over this structure (queries offset into keys)."""
        doc, blk, noisy = self.doc_ids, self.block_ids, self.noisy

        def mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            qi = q_idx + q_offset
            return allowed(doc[b, qi], doc[b, kv_idx], blk[b, qi], blk[b, kv_idx], noisy[b, qi], noisy[b, kv_idx])

        return mod

    # ------------------------------------------------------------------ constructors
    @staticmethod
    def _base(batch: int, length: int, device: torch.device | str | None) -> tuple[Tensor, Tensor, Tensor]:
        pos = torch.arange(length, device=device).expand(batch, length).clone()
        doc = torch.zeros(batch, length, dtype=torch.long, device=device)
        noisy = torch.zeros(batch, length, dtype=torch.bool, device=device)
        return pos, doc, noisy

    @classmethod
    def causal(cls, batch: int, length: int, device: torch.device | str | None = None) -> AttentionStructure:
        pos, doc, noisy = cls._base(batch, length, device)
        return cls(doc, pos.clone(), noisy, pos)

    @classmethod
    def bidirectional(cls, batch: int, length: int, device: torch.device | str | None = None) -> AttentionStructure:
        pos, doc, noisy = cls._base(batch, length, device)
        return cls(doc, torch.zeros_like(pos), noisy, pos)

    @classmethod
    def prefix(cls, prefix_lens: Tensor | Sequence[int], length: int, device: torch.device | str | None = None):
        """Bidirectional over the first ``prefix_lens[b]`` tokens, causal after."""
        split = torch.as_tensor(prefix_lens, dtype=torch.long, device=device).view(-1, 1)
        pos, doc, noisy = cls._base(split.shape[0], length, device)
        blocks = torch.clamp(pos - split + 1, min=0)
        return cls(doc, blocks, noisy, pos)

    @classmethod
    def from_documents(cls, doc_ids: Tensor, causal: bool = True) -> AttentionStructure:
        """Packed sequences: attention within each document (causal or bidirectional); positions restart."""
        doc_ids = doc_ids.long()
        if doc_ids.dim() == 1:
            doc_ids = doc_ids.unsqueeze(0)
        pos = positions_from_segments(doc_ids)
        blocks = torch.arange(doc_ids.shape[1], device=doc_ids.device).expand_as(doc_ids).clone()
        if not causal:
            blocks = torch.zeros_like(blocks)
        noisy = torch.zeros_like(doc_ids, dtype=torch.bool)
        return cls(doc_ids, blocks, noisy, pos)

    @classmethod
    def block_causal(cls, block_ids: Tensor, doc_ids: Tensor | None = None) -> AttentionStructure:
        """Bidirectional within each block (e.g. a turn or a fixed-size block), causal across blocks."""
        block_ids = block_ids.long()
        if block_ids.dim() == 1:
            block_ids = block_ids.unsqueeze(0)
        doc = torch.zeros_like(block_ids) if doc_ids is None else doc_ids.long().view_as(block_ids)
        pos = torch.arange(block_ids.shape[1], device=block_ids.device).expand_as(block_ids).clone()
        return cls(doc, block_ids, torch.zeros_like(block_ids, dtype=torch.bool), pos)

    @classmethod
    def block_diffusion(
        cls, batch: int, length: int, block_size: int, device: torch.device | str | None = None
    ) -> AttentionStructure:
        """BD3-LM training layout over ``[x_t ; x_0]`` of total length ``2 * length``.

        x_t: block-diagonal within x_t, sees x_0 blocks strictly before its own;
        x_0: block-causal within x_0. Both halves share positions ``0..length-1``.
        """
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        pos = torch.arange(length, device=device)
        blocks = pos // block_size
        pos2 = torch.cat([pos, pos]).expand(batch, 2 * length).clone()
        blk2 = torch.cat([blocks, blocks]).expand(batch, 2 * length).clone()
        noisy = torch.cat(
            [torch.ones(length, dtype=torch.bool, device=device), torch.zeros(length, dtype=torch.bool, device=device)]
        ).expand(batch, 2 * length).clone()
        doc = torch.zeros(batch, 2 * length, dtype=torch.long, device=device)
        return cls(doc, blk2, noisy, pos2)

    @classmethod
    def pad_to(cls, s: AttentionStructure, length: int) -> AttentionStructure:
        """Right-pad to ``length``; pad tokens form their own document (-1) and see only padding."""
        extra = length - s.seq_len
        if extra < 0:
            raise ValueError(f"cannot pad length {s.seq_len} down to {length}")
        if extra == 0:
            return s
        B, dev = s.batch_size, s.doc_ids.device
        return cls.cat(
            [
                s,
                cls(
                    torch.full((B, extra), -1, dtype=torch.long, device=dev),
                    torch.zeros(B, extra, dtype=torch.long, device=dev),
                    torch.zeros(B, extra, dtype=torch.bool, device=dev),
                    torch.zeros(B, extra, dtype=torch.long, device=dev),
                ),
            ]
        )


def positions_from_segments(seg_ids: Tensor) -> Tensor:
    """Positions that restart at 0 whenever ``seg_ids`` changes along the last dim."""
    L = seg_ids.shape[-1]
    idx = torch.arange(L, device=seg_ids.device).expand_as(seg_ids)
    start = torch.ones_like(seg_ids, dtype=torch.bool)
    start[..., 1:] = seg_ids[..., 1:] != seg_ids[..., :-1]
    seg_start = torch.where(start, idx, torch.zeros_like(idx))
    seg_start = torch.cummax(seg_start, dim=-1).values
    return idx - seg_start
