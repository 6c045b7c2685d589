"""The unimask transformer: a pre-norm decoder (RMSNorm, RoPE, SwiGLU, optional GQA).

Options for imported checkpoints (all off by default): q/k/v biases (Qwen2), per-head q/k RMSNorm
(Qwen3), an explicit head width, and linear / Llama 3 RoPE frequency scaling.

It knows nothing of objectives: every call takes an ``AttentionStructure`` (who may attend to
whom, and RoPE positions) and returns logits. A ``KVCache`` makes decoding incremental for
AR and block-causal (block diffusion) decoding: new tokens attend to the cached keys plus
themselves under the same structure rule, optionally without being stored (``commit=False``).

With ``ModelConfig.smear`` each token's embedding also receives, through a learned gate, the
embedding of its *predecessor*: the token one RoPE position earlier that it may attend to
(preferring one of its own kind, noisy or clean). The structure alone defines it, so the same
rule is right for causal, packed, bidirectional, block-diffusion and aligned agent layouts, and
for cached decoding (the cache keeps its token ids).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from unimask.model.attention import AttentionStructure
from unimask.model.config import ModelConfig
from unimask.model.fused_loss import linear_cross_entropy


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * self.weight.float()).type_as(x)


def rope_inv_freq(head_dim: int, theta: float, scaling: dict[str, Any] | None = None,
                  device: torch.device | None = None) -> Tensor:
    """RoPE inverse frequencies, optionally rescaled (``linear``, or Llama 3's ``llama3``) as Hugging Face does."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "default":
        return inv_freq
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    if kind == "llama3":
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"unknown rope_scaling type {kind!r}")


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype,
                 scaling: dict[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    """cos/sin ``[B, 1, T, head_dim]`` for integer positions ``[B, T]`` (half-split layout, as Llama)."""
    inv_freq = rope_inv_freq(head_dim, theta, scaling, positions.device)
    freqs = positions.float()[..., None] * inv_freq  # [B, T, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class KVCache:
    """Pre-allocated per-layer keys/values plus the attention fields of the cached tokens."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype):
        shape = (batch_size, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.max_len = max_len
        self.length = 0
        self.structure: AttentionStructure | None = None  # fields of the cached tokens
        self.ids = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)  # token ids (smear)

    def truncate(self, n: int) -> None:
        """Forget everything after the first ``n`` cached tokens."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a cache of length {self.length} to {n}")
        self.length = n
        self.structure = None if n == 0 or self.structure is None else self.structure[:n]

    def reserve(self, max_len: int) -> None:
        """Make room for ``max_len`` tokens (at least doubling), keeping what is cached."""
        if max_len <= self.max_len:
            return
        new_len = max(max_len, 2 * self.max_len)
        for store in (self.k, self.v):
            for i, t in enumerate(store):
                grown = t.new_zeros(*t.shape[:2], new_len, t.shape[3])
                grown[:, :, : self.length] = t[:, :, : self.length]
                store[i] = grown
        ids = self.ids.new_zeros(self.ids.shape[0], new_len)
        ids[:, : self.length] = self.ids[:, : self.length]
        self.ids, self.max_len = ids, new_len

    def keep_positions(self, index: Tensor) -> None:
        """Keep only cached tokens ``index`` (1-D, along the sequence), in that order.

        Keys carry their RoPE rotation, so order does not matter to attention; this lets a
        sampler cache a prefix *and* a suffix around the block it is decoding (dual cache).
        """
        n = len(index)
        for store in (self.k, self.v):
            for i, t in enumerate(store):
                kept = t[:, :, index].clone()
                store[i][:, :, :n] = kept
        self.ids[:, :n] = self.ids[:, index].clone()
        if self.structure is not None:
            self.structure = self.structure[index]
        self.length = n

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (e.g. drop finished sequences)."""
        self.k = [k[index] for k in self.k]
        self.v = [v[index] for v in self.v]
        self.ids = self.ids[index]
        if self.structure is not None:
            s = self.structure
            self.structure = AttentionStructure(
                s.doc_ids[index], s.block_ids[index], s.noisy[index], s.position_ids[index]
            )


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * hd, bias=cfg.attn_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * hd, bias=cfg.attn_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * hd, bias=cfg.attn_bias)
        self.o_proj = nn.Linear(cfg.n_heads * hd, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(hd, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(hd, cfg.norm_eps) if cfg.qk_norm else None

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        cache: KVCache | None,
        layer: int,
        commit: bool,
        block_mask: object | None = None,
    ) -> Tensor:
        B, T, _ = x.shape
        cfg = self.cfg
        q = self.q_proj(x).view(B, T, cfg.n_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            start = cache.length
            if start + T > cache.max_len:
                raise ValueError(f"KV cache overflow: {start}+{T} tokens > max_len {cache.max_len}")
            # commit=False writes into the free tail past cache.length and leaves the length alone: the
            # next call overwrites it, and no copy of the cached keys is made (a torch.cat per layer was)
            cache.k[layer][:, :, start : start + T] = k
            cache.v[layer][:, :, start : start + T] = v
            k, v = cache.k[layer][:, :, : start + T], cache.v[layer][:, :, : start + T]
        if block_mask is not None:
            from torch.nn.attention.flex_attention import flex_attention

            out = flex_attention(q, k, v, block_mask=block_mask, enable_gqa=cfg.n_kv_heads != cfg.n_heads)
        else:
            if cfg.n_kv_heads != cfg.n_heads:
                rep = cfg.n_heads // cfg.n_kv_heads
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, is_causal: bool,
                cache: KVCache | None, layer: int, commit: bool, block_mask: object | None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, is_causal, cache, layer, commit, block_mask)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """``logits = model(input_ids, attention=None, kv_cache=None, commit=True)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.smear_gate = nn.Linear(cfg.d_model, 1) if cfg.smear else None
        # The predecessor enters through its own projection: added raw, it would share the token's
        # own embedding subspace and attention could not tell "I am A" from "I follow A" (measured:
        # no faster copying than no smear; projected, the copy probe learns ~10x faster).
        self.smear_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False) if cfg.smear else None
        self.activation_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith("proj.bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                # GPT-2 style: shrink residual-branch outputs with depth.
                s = std / (2 * self.cfg.n_layers) ** 0.5 if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                nn.init.normal_(p, mean=0.0, std=s)
            else:
                nn.init.ones_(p)
        if self.smear_gate is not None:  # start at an even mix, learn from there
            nn.init.zeros_(self.smear_gate.weight)
            nn.init.zeros_(self.smear_gate.bias)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        self.activation_checkpointing = enabled

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if exclude_embeddings else n

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        p = self.embed.weight
        return KVCache(self.cfg, batch_size, max_len or self.cfg.max_seq_len, p.device, dtype or p.dtype)

    # ------------------------------------------------------------------ smear
    def _smear(self, x: Tensor, input_ids: Tensor, structure: AttentionStructure | None,
               cache: KVCache | None, start: int, mask: Tensor | None) -> Tensor:
        """Add the gated embedding of each new token's predecessor (see the module docstring)."""
        if structure is None:  # plain causal, no cache: the predecessor is the previous index
            prev = F.pad(x[:, :-1], (0, 0, 1, 0))
        else:
            ids = input_ids if cache is None or start == 0 else torch.cat([cache.ids[:, :start], input_ids], 1)
            index, found = structure.predecessors(start, mask=mask)
            prev = self.embed(torch.gather(ids, 1, index)) * found.unsqueeze(-1).to(x.dtype)
        return x + torch.sigmoid(self.smear_gate(x)) * self.smear_proj(prev)

    # ------------------------------------------------------------------ attention plumbing
    def _structure(self, B: int, T: int, attention: AttentionStructure | None, cache: KVCache | None,
                   device: torch.device) -> AttentionStructure | None:
        """The structure over all keys (cached + new); None means plain causal without cache."""
        start = cache.length if cache is not None else 0
        if attention is None:
            if cache is None:
                return None
            new = AttentionStructure.causal(B, T, device)
            new = AttentionStructure(new.doc_ids, new.block_ids + start, new.noisy, new.position_ids + start)
            return new if cache.structure is None or start == 0 else AttentionStructure.cat([cache.structure, new])
        if attention.seq_len == T and start > 0:
            if cache.structure is None:
                raise ValueError("the cache holds tokens without structure; pass the full structure")
            attention = AttentionStructure.cat([cache.structure, attention])
        if attention.seq_len != start + T:
            raise ValueError(
                f"attention covers {attention.seq_len} tokens but the keys are {start} cached + {T} new; "
                "pass a structure for the new tokens or for all keys"
            )
        if attention.batch_size != B:
            raise ValueError(f"attention batch size {attention.batch_size} != input batch size {B}")
        return attention

    def forward(
        self,
        input_ids: Tensor,
        attention: AttentionStructure | None = None,
        kv_cache: KVCache | None = None,
        commit: bool = True,
        logits_to_keep: int = 0,
        labels: Tensor | None = None,
        loss_weights: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[B, T, V]``, or of the last ``logits_to_keep`` positions only (0 = all), as
        ``transformers`` names it: a prompt pass needs the last position's, not a vocabulary row per token.

        With ``labels`` and ``loss_weights`` (``[B, T]``) it returns the training loss instead: the
        batch mean of each example's weighted token cross-entropy, through the fused head of
        ``unimask.model.fused_loss`` (no logits are materialised; unscored positions skip the head)."""
        B, T = input_ids.shape
        if T == 0:
            raise ValueError("input_ids is empty")
        device = input_ids.device
        start = kv_cache.length if kv_cache is not None else 0
        structure = self._structure(B, T, attention, kv_cache, device)
        x = self.embed(input_ids)
        if structure is None:
            if T > self.cfg.max_seq_len:
                raise ValueError(f"sequence of {T} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
            positions = torch.arange(T, device=device).expand(B, T)
            mask, is_causal, block_mask = None, True, None
        else:
            positions = structure.position_ids[:, start:]
            if int(positions.max()) >= self.cfg.max_seq_len:
                raise ValueError(f"position {int(positions.max())} exceeds max_seq_len {self.cfg.max_seq_len}")
            mask, is_causal, block_mask = None, False, None
            # flex_attention has no CPU backward: train on CPU through SDPA (same numbers, tested).
            use_flex = self.cfg.attn_impl == "flex" and kv_cache is None
            if use_flex and not (device.type == "cpu" and torch.is_grad_enabled()):
                from unimask.model.flex import build_block_mask

                block_mask = build_block_mask(structure, q_len=T, q_offset=start)
            else:
                mask = structure.dense_mask(slice(start, start + T))
        if self.smear_gate is not None:
            x = self._smear(x, input_ids, structure, kv_cache, start, mask)
        if kv_cache is not None and mask is not None and bool(mask.all()):
            mask = None  # decoding with every key visible: SDPA's unmasked kernel (decoding syncs per step anyway)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype, self.cfg.rope_scaling)
        for i, layer in enumerate(self.layers):
            if self.activation_checkpointing and self.training:
                x = checkpoint(layer, x, cos, sin, mask, is_causal, kv_cache, i, commit, block_mask,
                               use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, is_causal, kv_cache, i, commit, block_mask)
        if kv_cache is not None and commit:
            kv_cache.ids[:, start : start + T] = input_ids
            kv_cache.length = start + T
            kv_cache.structure = structure
        if labels is not None:
            if loss_weights is None:
                raise ValueError("labels need loss_weights (0 where a position is not scored)")
            return linear_cross_entropy(self.norm(x), self.lm_head.weight, labels, loss_weights)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return self.lm_head(self.norm(x))
