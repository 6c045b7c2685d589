"""Autoregressive decoding with a KV cache, batched with left padding, for any causal model.

Works for a unimask ``Transformer`` and for ``HFCausalLM`` (a local transformers model), which
share one forward signature, so ``ARBackbone`` is also the Hugging Face backbone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from unimask.model.attention import AttentionStructure
from unimask.sampling.backbone import Generation
from unimask.sampling.constraint import Constraint
from unimask.sampling.decoding import find_stop, make_generator, sample_tokens
from unimask.sampling.options import DecodingOptions
from unimask.sampling.prefix_cache import PrefixCache
from unimask.tokenizer import Tokenizer

LogitsProcessor = Callable[[Tensor, Tensor], Tensor]  # (generated ids [B, t], logits [B, V]) -> logits


def left_padded(prompts: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, AttentionStructure]:
    """Left-pad ids; padding is its own document (-1) so real tokens never see it."""
    B, T = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    doc = torch.full((B, T), -1, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    for i, p in enumerate(prompts):
        n = len(p)
        ids[i, T - n :] = torch.tensor(p, dtype=torch.long)
        doc[i, T - n :] = 0
        pos[i, T - n :] = torch.arange(n)
    blk = torch.arange(T).expand(B, T).clone()
    s = AttentionStructure(doc, blk, torch.zeros(B, T, dtype=torch.bool), pos)
    return ids.to(device), s.to(device)


class ARBackbone:
    """``generate`` for causal models: greedy/temperature/top-k/top-p, stop ids and strings."""

    def __init__(self, model: Any, tokenizer: Tokenizer, device: str | torch.device | None = None,
                 kind: Literal["ar", "hf"] = "ar", **defaults: Any):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.kind = kind
        self.defaults = DecodingOptions().replace(**defaults)
        self.max_len = model.cfg.max_seq_len
        self.prefix = PrefixCache(model)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        stop: Sequence[str] | None = None,
        constraint: Constraint | None = None,
        logits_processor: LogitsProcessor | None = None,
        on_update: Callable[[int, str], None] | None = None,
        prompt_ids: Sequence[list[int]] | None = None,
        **decoding: Any,
    ) -> list[Generation]:
        """Decode every prompt; ``forced_tokens`` (with a constraint) is jump-forward decoding.

        Tokens the constraint leaves no choice about cost no forward pass: the end of turn after a
        complete action always, and with ``forced_tokens`` the schema's forced continuations.
        Such tokens are queued and fed to the model together, in the next pass that needs logits;
        rows advance in lock-step, so a pass is skipped only when every live row has a forced token.
        With ``prefix_cache`` a single prompt prefills only what follows its common prefix with the
        previous call's cached tokens.
        """
        t0 = time.perf_counter()
        tok = self.tokenizer
        opts = self.defaults.replace(**decoding)
        temperature, forced_tokens = opts.temperature, bool(opts.forced_tokens)
        ids_list = list(prompt_ids) if prompt_ids is not None else [tok.encode_prompt(p) for p in prompts]
        if not ids_list or any(len(p) == 0 for p in ids_list):
            raise ValueError("every prompt must be non-empty")
        longest = max(len(p) for p in ids_list)
        if longest + max_new_tokens > self.max_len:
            raise ValueError(f"prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds the model "
                             f"context of {self.max_len}; shorten the prompt or lower max_new_tokens")
        stops = list(stop or [])
        stop_ids = set(opts.stop_token_ids if opts.stop_token_ids is not None else [tok.eos_id, tok.pad_id])
        B = len(ids_list)
        ids, structure = left_padded(ids_list, tok.pad_id, self.device)
        gen = make_generator(opts.seed, self.device)
        reuse = bool(opts.prefix_cache) and B == 1
        if reuse:
            cache, n = self.prefix.take(ids_list[0], ids.shape[1] + max_new_tokens)
        else:
            cache, n = self.model.new_kv_cache(B, ids.shape[1] + max_new_tokens), 0
        logits = self.model(ids[:, n:], structure[n:], kv_cache=cache, logits_to_keep=1)[:, -1]
        nfe = 1
        out: list[list[int]] = [[] for _ in range(B)]
        texts = [""] * B
        reason: list[str | None] = [None] * B
        next_pos = structure.position_ids[:, -1] + 1
        history = torch.zeros(B, 0, dtype=torch.long, device=self.device)
        states = [constraint.start() for _ in range(B)] if constraint is not None else None
        queued: list[list[int]] = [[] for _ in range(B)]  # tokens the constraint forces, not yet written
        jumped = [False] * B  # the queue holds forced continuations (not the end of turn)
        n_forced = [0] * B
        unfed: list[list[int]] = []  # tokens written since the last forward pass, one [B] row per step
        for _ in range(max_new_tokens):
            if states is not None:
                for i in range(B):
                    if reason[i] is None and not queued[i]:
                        if constraint.is_complete(states[i]):
                            queued[i], jumped[i] = [tok.end_of_turn_id], False
                        elif forced_tokens:
                            queued[i], jumped[i] = constraint.forced_ids(states[i], tok)[0], True
            live = [i for i in range(B) if reason[i] is None]
            if unfed and not all(queued[i] for i in live):
                feed = torch.tensor(unfed, dtype=torch.long, device=self.device).T  # [B, n]
                n = feed.shape[1]
                offs = torch.arange(n, device=self.device)
                new = AttentionStructure(
                    torch.zeros(B, n, dtype=torch.long, device=self.device),
                    (cache.length + offs).expand(B, n),
                    torch.zeros(B, n, dtype=torch.bool, device=self.device),
                    next_pos[:, None] + offs,
                )
                logits = self.model(feed, new, kv_cache=cache, logits_to_keep=1)[:, -1]
                next_pos = next_pos + n
                nfe += 1
                unfed = []
            if all(queued[i] for i in live):
                nxt = torch.tensor([queued[i][0] if queued[i] else tok.pad_id for i in range(B)], device=self.device)
            else:
                if logits_processor is not None:
                    logits = logits_processor(history, logits)
                if states is not None and not temperature:  # greedy: only the best valid token is needed
                    best = torch.tensor([constraint.best_valid(st, row, tok) for st, row in
                                         zip(states, logits, strict=True)], device=logits.device)
                    logits = torch.full_like(logits, float("-inf")).scatter(1, best[:, None], 0.0)
                elif states is not None:
                    logits = constraint.mask_logits(logits, states, tok)
                nxt = sample_tokens(logits, temperature, opts.top_k, opts.top_p, gen)
                for i in live:  # a forced token overrides the model (the constraint admits nothing else)
                    if queued[i]:
                        nxt[i] = queued[i][0]
            history = torch.cat([history, nxt[:, None]], dim=1)
            unfed.append(nxt.tolist())
            for i in range(B):
                if reason[i] is not None:
                    continue
                if queued[i]:
                    queued[i].pop(0)
                    n_forced[i] += jumped[i]
                t = int(nxt[i])
                if t in stop_ids:
                    reason[i] = "eos"
                    continue
                out[i].append(t)
                if states is not None and not constraint.is_complete(states[i]):
                    states[i] = constraint.advance(states[i], t, tok)
                texts[i] = tok.decode(out[i])
                cut = find_stop(texts[i], stops)
                if cut >= 0:
                    texts[i] = texts[i][:cut]
                    reason[i] = "stop"
                if on_update is not None:
                    on_update(i, texts[i])
            if all(r is not None for r in reason):
                break
        if reuse:
            self.prefix.put(cache, ids_list[0] + history[0].tolist())
        wall = time.perf_counter() - t0
        return [
            Generation(texts[i], out[i], nfe, wall, reason[i] or "length",
                       {"tokens_per_step": len(out[i]) / nfe, "forced_tokens": n_forced[i]})
            for i in range(B)
        ]
