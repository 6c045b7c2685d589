"""Today's samplers (main at 39d1999), frozen: the reference the fast paths must reproduce.

``LegacyDiffusion`` / ``LegacyAR`` decode exactly as the samplers did before issue 18 (whole-action
constraint re-validation, per-row commit loops, blocks decoded to their end); ``LegacyConstraint``
is the string-state constraint they used. Used by tests/test_sampling.py (identical outputs) and
benchmarks/bench_agent_step.py (old vs new, interleaved). Not part of the package: do not edit
except to follow an interface change of the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from unimask.agent.constraint import ToolCallConstraint
from unimask.model.attention import AttentionStructure
from unimask.sampling.ar import ARBackbone, left_padded
from unimask.sampling.backbone import Generation
from unimask.sampling.decoding import add_gumbel_noise, find_stop, make_generator, sample_tokens
from unimask.sampling.diffusion import DiffusionBackbone, Remasking, num_transfer_tokens
from unimask.tokenizer import Tokenizer

LogitsProcessor = Callable[[Tensor, Tensor], Tensor]


class LegacyConstraint:
    """The old string-state interface over ``ToolCallConstraint.valid``/``complete``."""

    def __init__(self, constraint: ToolCallConstraint):
        self.c = constraint
        self.candidates = constraint.candidates

    def valid(self, text: str) -> bool:
        return self.c.valid(text)

    def complete(self, text: str) -> bool:
        return self.c.complete(text)

    def start(self) -> str:
        return ""

    def advance(self, state: str, token_id: int, tokenizer: Any) -> str:
        return state + tokenizer.decode([token_id])

    def best_valid(self, state: str, logits: Tensor, tokenizer: Any) -> int:
        """The highest-scoring token that keeps ``state`` a valid prefix (greedy, without a full mask).

        Walks the candidates best-first and stops at the first valid one: on a trained model that is
        usually the argmax, so one validity check instead of ``candidates``.
        """
        if self.complete(state):
            return tokenizer.end_of_turn_id
        for t in torch.topk(logits, min(self.candidates, logits.shape[-1])).indices.tolist():
            if self.valid(state + tokenizer.decode([t])):
                return t
        return int(self.mask_logits(logits[None], [state], tokenizer)[0].argmax())

    def mask_logits(self, logits: Tensor, states: Sequence[str], tokenizer: Any) -> Tensor:
        """Keep, per row, only the top candidates that keep the text a valid prefix."""
        out = torch.full_like(logits, float("-inf"))
        k = min(self.candidates, logits.shape[-1])
        top = torch.topk(logits, k, dim=-1).indices
        for b, state in enumerate(states):
            if self.complete(state):
                out[b, tokenizer.end_of_turn_id] = 0.0
                continue
            kept = [int(t) for t in top[b] if self.valid(state + tokenizer.decode([int(t)]))]
            if not kept:  # nothing among the candidates: fall back to the full vocabulary scan
                kept = [t for t in range(logits.shape[-1]) if self.valid(state + tokenizer.decode([t]))][:1]
            if kept:
                out[b, kept] = logits[b, kept]
            else:
                out[b, tokenizer.end_of_turn_id] = 0.0
        return out

    def commit_run(self, text: str, block: list[int], masked: list[bool], logits: Tensor, tokenizer: Any,
                   threshold: float | None, mask_id: int) -> list[tuple[int, int]]:
        """(position, token) commits for a diffusion step: a left-contiguous run of valid tokens.

        The first masked position always gets its best valid token; the following masked
        positions join the run while their best valid token is confident (> ``threshold``).
        """
        for j, m in enumerate(masked):  # text = committed action so far + the committed prefix of the block
            if m:
                break
            text += tokenizer.decode([block[j]])
        else:
            return []
        probs = logits.float().softmax(-1)
        commits: list[tuple[int, int]] = []
        for pos in range(j, len(block)):
            if not masked[pos]:
                break
            if self.complete(text):
                tok_id, conf = tokenizer.end_of_turn_id, 1.0
            else:
                row = logits[pos].clone()
                row[mask_id] = float("-inf")
                tok_id = self.best_valid(text, row, tokenizer)
                conf = float(probs[pos, tok_id])
            if commits and (threshold is None or conf <= threshold):
                break
            commits.append((pos, tok_id))
            text += tokenizer.decode([tok_id])
        return commits


def legacy_choose_commits(
    logits: Tensor,
    x: Tensor,
    masked: Tensor,
    k: Tensor | None,
    threshold: float | None,
    remasking: Remasking,
    temperature: float,
    generator: torch.Generator | None,
    allowed: Tensor | None = None,
    mask_id: int | None = None,
) -> tuple[Tensor, Tensor]:
    """One decoding step over a window: returns (new x, bool commits). ``logits`` [B, n, V].

    ``mask_id``: never commit the mask token itself (an untrained model may prefer it).
    """
    if mask_id is not None:
        logits = logits.clone()
        logits[..., mask_id] = float("-inf")
    x0 = add_gumbel_noise(logits, temperature, generator).argmax(-1)
    if remasking == "low_confidence":
        p = torch.softmax(logits.float(), dim=-1)  # as LLaDA: fp32 softmax (float64 flips near-ties)
        conf = torch.gather(p, -1, x0[..., None])[..., 0]
    elif remasking == "random":
        conf = torch.rand(x0.shape, dtype=torch.float64, device=x0.device, generator=generator)
    else:
        raise ValueError(f"unknown remasking {remasking!r}: use 'low_confidence' or 'random'")
    x0 = torch.where(masked, x0, x)
    conf = torch.where(masked, conf, torch.full_like(conf, float("-inf")))
    if allowed is not None:
        conf = torch.where(allowed, conf, torch.full_like(conf, float("-inf")))
    commit = torch.zeros_like(masked)
    for b in range(x.shape[0]):
        if not bool(masked[b].any()):
            continue
        if threshold is not None:
            sel = conf[b] > threshold
            if not bool(sel.any()):
                sel[int(conf[b].argmax())] = True
            commit[b] = sel & torch.isfinite(conf[b])
        else:
            n = max(int(k[b]), 1)  # the schedule may run out when a constraint held positions back
            if n > 0:
                commit[b, torch.topk(conf[b], n).indices] = True
    commit &= masked
    return torch.where(commit, x0, x), commit


def _constrained(constraint: Any, tok: Tokenizer, before: Tensor, block: Tensor, masked: Tensor, logits: Tensor,
                 threshold: float | None) -> tuple[Tensor, Tensor]:
    """A constrained step: commit the left-contiguous run ``constraint.commit_run`` allows."""
    commits = constraint.commit_run(tok.decode(before.tolist()), block[0].tolist(), masked[0].tolist(), logits[0],
                                    tok, threshold, tok.mask_id)
    block = block.clone()
    commit = torch.zeros_like(masked)
    for pos, t in commits:
        block[0, pos] = t
        commit[0, pos] = True
    return block, commit



class LegacyDiffusion(DiffusionBackbone):
    """``DiffusionBackbone`` with today's decoding loop; ``constraint`` is a ``LegacyConstraint``."""

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str] | None = None,
                 constraint: Any | None = None, on_update: Callable[[int, str], None] | None = None,
                 prompt_ids: Sequence[list[int]] | None = None, **decoding: Any) -> list[Generation]:
        opts = {**asdict(self.defaults), **decoding}
        ids_list = list(prompt_ids) if prompt_ids is not None else [self.tokenizer.encode(p) for p in prompts]
        if constraint is not None and not isinstance(constraint, LegacyConstraint):
            constraint = LegacyConstraint(constraint)
        return [self._one(ids, max_new_tokens, list(stop or []), constraint, on_update, i, opts)
                for i, ids in enumerate(ids_list)]

    def _stop_ids(self) -> set[int]:
        return {self.tokenizer.eos_id, self.tokenizer.pad_id}

    def _finish(self, gen_ids: list[int], stops: list[str]) -> tuple[str, list[int], str | None]:
        tok = self.tokenizer
        reason = None
        for j, t in enumerate(gen_ids):
            if t in self._stop_ids() or t == tok.mask_id:
                gen_ids, reason = gen_ids[:j], "eos"
                break
        text = tok.decode(gen_ids)
        cut = find_stop(text, stops)
        if cut >= 0:
            text, reason = text[:cut], "stop"
        return text, gen_ids, reason

    def _one(self, prompt: list[int], max_new: int, stops: list[str], constraint: Any,
             on_update: Callable[[int, str], None] | None, index: int, opts: dict[str, Any]) -> Generation:
        t0 = time.perf_counter()
        bl = int(opts.get("block_length") or self.block_length)
        n_blocks = -(-max_new // bl)
        gen_len = n_blocks * bl
        if len(prompt) + gen_len > self.max_len:
            raise ValueError(f"prompt of {len(prompt)} tokens + {gen_len} generated exceeds the model context "
                             f"of {self.max_len}; shorten the prompt or lower max_new_tokens")
        steps = int(opts.get("steps") or gen_len)
        steps_per_block = max(1, steps // n_blocks)
        threshold = opts.get("threshold")
        generator = make_generator(opts.get("seed"), self.device)
        tok = self.tokenizer
        P = len(prompt)
        x = torch.tensor([prompt + [tok.mask_id] * gen_len], device=self.device)
        nfe, reason, text, out = 0, None, "", []
        cache = None
        if self.mode == "block":
            cache = self.model.new_kv_cache(1, P + gen_len + bl)
            pending = x[:, :P]  # clean tokens not yet in the cache
        for b in range(n_blocks):
            s, e = P + b * bl, P + (b + 1) * bl
            if self.mode == "block":
                x, used = self._decode_block_cached(x, s, e, pending, cache, steps_per_block, threshold, opts,
                                                    generator, constraint, P)
                pending = x[:, s:e]
            else:
                x, used = self._denoise_full(x, slice(s, e), {**opts, "steps": steps_per_block}, generator,
                                             constraint=constraint, gen_start=P)
            nfe += used
            text, out, reason = self._finish(x[0, P:e].tolist(), stops)
            if on_update is not None:
                on_update(index, text)
            if reason is not None:
                break
        gen = x[0, P:].tolist()
        committed = min(len(gen), (b + 1) * bl)
        return Generation(text, out, nfe, time.perf_counter() - t0, reason or "length",
                          {"tokens_per_step": committed / max(nfe, 1), "blocks": b + 1})

    def _decode_block_cached(self, x: Tensor, s: int, e: int, pending: Tensor, cache: Any, steps: int,
                             threshold: float | None, opts: dict[str, Any], generator: torch.Generator | None,
                             constraint: Any, gen_start: int) -> tuple[Tensor, int]:
        """Exact-cache block decoding. The first step also commits ``pending`` clean tokens."""
        tok = self.tokenizer
        start = cache.length
        n_pend = pending.shape[1]
        block = x[:, s:e].clone()
        masked = block == tok.mask_id
        k_sched = num_transfer_tokens(masked.sum(1), steps)
        nfe = 0
        step = 0
        first = None  # shifted models: the last clean token's logits predict the block's first token
        while bool(masked.any()):
            if n_pend:
                inp = torch.cat([pending, block], 1)
                pos_p = torch.arange(start, start + n_pend, device=self.device)
                clean = AttentionStructure(torch.zeros(1, n_pend, dtype=torch.long, device=self.device),
                                           pos_p[None], torch.zeros(1, n_pend, dtype=torch.bool, device=self.device),
                                           pos_p[None])
                noisy = self._noisy(s, e)
                logits = self.model(inp, AttentionStructure.cat([clean, noisy]), kv_cache=cache)[:, n_pend - 1:]
                first, logits = logits[:, :1], logits[:, 1:]
                cache.truncate(start + n_pend)  # keep the clean tokens, drop the noisy block
                n_pend = 0
            else:
                logits = self.model(block, self._noisy(s, e), kv_cache=cache, commit=False)
            if self.shift:
                if first is None:
                    raise RuntimeError("a shifted block needs the clean context's last logits; none were computed")
                logits = torch.cat([first, logits[:, :-1]], 1)
            nfe += 1
            block, commit = self._step(logits, block, masked, x[0, gen_start:s], constraint, k_sched, step,
                                       threshold, opts, generator)
            masked &= ~commit
            step += 1
        x = x.clone()
        x[:, s:e] = block
        return x, nfe

    def _step(self, logits: Tensor, window: Tensor, masked: Tensor, before: Tensor, constraint: Any,
              k_sched: Tensor, step: int, threshold: float | None, opts: dict[str, Any],
              generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One commit decision over a window: constrained left-to-right runs, or schedule/threshold."""
        tok = self.tokenizer
        if constraint is not None:
            return _constrained(constraint, tok, before, window, masked, logits, threshold)
        k = k_sched[:, min(step, k_sched.shape[1] - 1)] if threshold is None else None
        return legacy_choose_commits(logits, window, masked, k, threshold, opts.get("remasking") or "low_confidence",
                              float(opts.get("temperature") or 0.0), generator, None, tok.mask_id)

    def _noisy(self, s: int, e: int) -> AttentionStructure:
        n = e - s
        pos = torch.arange(s, e, device=self.device)[None]
        return AttentionStructure(torch.zeros(1, n, dtype=torch.long, device=self.device),
                                  torch.full((1, n), s, dtype=torch.long, device=self.device),
                                  torch.ones(1, n, dtype=torch.bool, device=self.device), pos)

    def _denoise_full(self, x: Tensor, region: slice, opts: dict[str, Any], generator: torch.Generator | None,
                      constraint: Any = None, gen_start: int = 0) -> tuple[Tensor, int]:
        """LLaDA-style bidirectional denoising of ``x[:, region]`` (everything else visible)."""
        tok = self.tokenizer
        L = x.shape[1]
        s, e = region.start, region.stop
        steps = int(opts.get("steps") or (e - s))
        threshold = opts.get("threshold")
        cache_mode = opts.get("cache") or "none"
        full = AttentionStructure.bidirectional(1, L, self.device)
        lo = s - int(self.shift)  # shifted: position i's logits predict token i+1
        if lo < 0:
            raise ValueError("a shifted model predicts each token from the one before it: the masked region needs "
                             "at least one token before it (a non-empty prompt or prefix)")
        masked_all = x == tok.mask_id
        k_sched = num_transfer_tokens(masked_all[:, s:e].sum(1), steps)
        nfe, step = 0, 0
        cache = None
        while bool((x[:, s:e] == tok.mask_id).any()):
            if cache_mode == "none":
                logits = self.model(x, full)[:, lo : lo + e - s]
            elif cache is None:
                cache = self.model.new_kv_cache(1, L)
                logits = self.model(x, full, kv_cache=cache)[:, lo : lo + e - s]
                keep = torch.arange(lo, device=self.device) if cache_mode == "prefix" else \
                    torch.cat([torch.arange(lo, device=self.device), torch.arange(e, L, device=self.device)])
                cache.keep_positions(keep)
            else:
                q = x[:, lo:] if cache_mode == "prefix" else x[:, lo:e]
                qs = full[lo:] if cache_mode == "prefix" else full[lo:e]
                logits = self.model(q, qs, kv_cache=cache, commit=False)[:, : e - s]
            nfe += 1
            blk = x[:, s:e]
            masked = blk == tok.mask_id
            new, _ = self._step(logits, blk, masked, x[0, gen_start:s], constraint, k_sched, step, threshold,
                                opts, generator)
            x = x.clone()
            x[:, s:e] = new
            step += 1
        return x, nfe


class LegacyAR(ARBackbone):
    """``ARBackbone`` with today's decoding loop."""

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        stop: Sequence[str] | None = None,
        constraint: Any | None = None,
        temperature: float | None = None,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop_token_ids: Sequence[int] | None = None,
        logits_processor: LogitsProcessor | None = None,
        on_update: Callable[[int, str], None] | None = None,
        prompt_ids: Sequence[list[int]] | None = None,
        **unused: Any,
    ) -> list[Generation]:
        t0 = time.perf_counter()
        tok = self.tokenizer
        temperature = asdict(self.defaults).get("temperature", 0.0) if temperature is None else temperature
        ids_list = list(prompt_ids) if prompt_ids is not None else [tok.encode(p) for p in prompts]
        if not ids_list or any(len(p) == 0 for p in ids_list):
            raise ValueError("every prompt must be non-empty")
        longest = max(len(p) for p in ids_list)
        if longest + max_new_tokens > self.max_len:
            raise ValueError(f"prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds the model "
                             f"context of {self.max_len}; shorten the prompt or lower max_new_tokens")
        stops = list(stop or [])
        stop_ids = set(stop_token_ids if stop_token_ids is not None else [tok.eos_id, tok.pad_id])
        B = len(ids_list)
        ids, structure = left_padded(ids_list, tok.pad_id, self.device)
        gen = make_generator(seed, self.device)
        cache = self.model.new_kv_cache(B, ids.shape[1] + max_new_tokens)
        logits = self.model(ids, structure, kv_cache=cache)[:, -1]
        nfe = 1
        out: list[list[int]] = [[] for _ in range(B)]
        texts = [""] * B
        reason: list[str | None] = [None] * B
        next_pos = structure.position_ids[:, -1] + 1
        history = torch.zeros(B, 0, dtype=torch.long, device=self.device)
        if constraint is not None and not isinstance(constraint, LegacyConstraint):
            constraint = LegacyConstraint(constraint)
        states = [constraint.start() for _ in range(B)] if constraint is not None else None
        for step in range(max_new_tokens):
            if logits_processor is not None:
                logits = logits_processor(history, logits)
            if states is not None and not temperature:  # greedy: only the best valid token is needed
                best = torch.tensor([constraint.best_valid(st, row, tok) for st, row in zip(states, logits, strict=True)],
                                    device=logits.device)
                logits = torch.full_like(logits, float("-inf")).scatter(1, best[:, None], 0.0)
            elif states is not None:
                logits = constraint.mask_logits(logits, states, tok)
            nxt = sample_tokens(logits, temperature, top_k, top_p, gen)
            history = torch.cat([history, nxt[:, None]], dim=1)
            for i in range(B):
                if reason[i] is not None:
                    continue
                t = int(nxt[i])
                if t in stop_ids:
                    reason[i] = "eos"
                    continue
                out[i].append(t)
                if states is not None:
                    states[i] = constraint.advance(states[i], t, tok)
                texts[i] = tok.decode(out[i])
                cut = find_stop(texts[i], stops)
                if cut >= 0:
                    texts[i] = texts[i][:cut]
                    reason[i] = "stop"
                if on_update is not None:
                    on_update(i, texts[i])
            if all(r is not None for r in reason) or step == max_new_tokens - 1:
                break
            new = AttentionStructure(
                torch.zeros(B, 1, dtype=torch.long, device=self.device),
                torch.full((B, 1), cache.length, dtype=torch.long, device=self.device),
                torch.zeros(B, 1, dtype=torch.bool, device=self.device),
                next_pos[:, None],
            )
            ids = nxt[:, None]
            logits = self.model(ids, new, kv_cache=cache)[:, -1]
            next_pos = next_pos + 1
            nfe += 1
        wall = time.perf_counter() - t0
        return [
            Generation(texts[i], out[i], nfe, wall, reason[i] or "length", {"tokens_per_step": len(out[i]) / nfe})
            for i in range(B)
        ]
