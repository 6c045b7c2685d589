"""Diffusion decoding: LLaDA-style masked diffusion and context-causal block diffusion.

One step = one forward pass (one NFE) over the masked positions of the current block; the
positions committed per step are chosen by

* a fixed schedule (LLaDA): ``steps`` per block, the block's masks split evenly over them, the
  most confident (``remasking="low_confidence"``) or random positions committed first;
* a confidence threshold (Fast-dLLM): every masked position whose confidence exceeds
  ``threshold`` is committed at once (at least one per step) -- parallel decoding.

Caching. ``mode="block"`` (block-diffusion checkpoints, clean context causal): the prompt and
every finished block go into an *exact* KV cache; a block is decoded against it with
``commit=False`` and committed together with the first step of the next block. ``mode="full"``
(LLaDA-style bidirectional models): ``cache="none"`` recomputes everything each step,
``"prefix"`` caches the keys of everything before the current block once per block
(approximate, Fast-dLLM's prefix cache), ``"dual"`` caches the suffix too.

Shifted models (``shift=True``; Dream, and unimask DLLMs adapted from an AR model with shifted
targets): the logits at position i predict token i+1, so a block's first token is read from the
last clean token's logits and every other masked token from its predecessor's.

Generation stops early once a block contains EOS/pad, a stop id or a stop string.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from unimask.model.attention import AttentionStructure
from unimask.sampling.backbone import Generation
from unimask.sampling.decoding import add_gumbel_noise, find_stop, make_generator
from unimask.tokenizer import Tokenizer

Remasking = Literal["low_confidence", "random"]


def num_transfer_tokens(n_masked: Tensor, steps: int) -> Tensor:
    """LLaDA's schedule: ``[B, steps]`` counts that sum to ``n_masked``, remainder first."""
    base = n_masked // steps
    rem = n_masked % steps
    out = base[:, None].repeat(1, steps)
    out[torch.arange(steps)[None, :] < rem[:, None]] += 1
    return out


def choose_commits(
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


class DiffusionBackbone:
    """``generate`` for diffusion checkpoints (see the module docstring for the modes)."""

    kind = "diffusion"

    def __init__(self, model: Any, tokenizer: Tokenizer, mode: Literal["block", "full"] = "block",
                 block_length: int = 16, device: str | torch.device | None = None, shift: bool = False,
                 **defaults: Any):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mode = mode
        self.shift = shift
        self.block_length = block_length
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.defaults = {"threshold": 0.9, "remasking": "low_confidence", "temperature": 0.0, "cache": "dual",
                         **defaults}
        self.max_len = model.cfg.max_seq_len

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        stop: Sequence[str] | None = None,
        constraint: Any | None = None,
        on_update: Callable[[int, str], None] | None = None,
        prompt_ids: Sequence[list[int]] | None = None,
        **decoding: Any,
    ) -> list[Generation]:
        # An explicit ``threshold=None`` switches to LLaDA's fixed schedule; omit it for the default.
        opts = {**self.defaults, **decoding}
        ids_list = list(prompt_ids) if prompt_ids is not None else [self.tokenizer.encode(p) for p in prompts]
        if not ids_list or any(len(p) == 0 for p in ids_list):
            raise ValueError("every prompt must be non-empty")
        return [self._one(ids, max_new_tokens, list(stop or []), constraint, on_update, i, opts)
                for i, ids in enumerate(ids_list)]

    def infill(self, prefix: str, suffix: str, middle_tokens: int, **decoding: Any) -> Generation:
        """Native diffusion infilling: masks between a prefix and a suffix, decoded bidirectionally."""
        tok = self.tokenizer
        pre, suf = tok.encode(prefix), tok.encode(suffix)
        x = torch.tensor([pre + [tok.mask_id] * middle_tokens + suf], device=self.device)
        opts = {**self.defaults, **decoding}
        t0 = time.perf_counter()
        region = slice(len(pre), len(pre) + middle_tokens)
        x, nfe = self._denoise_full(x, region, opts, generator=make_generator(opts.get("seed"), self.device))
        mid = x[0, region].tolist()
        cut = next((i for i, t in enumerate(mid) if t in (tok.eos_id, tok.pad_id, tok.eom_id)), len(mid))
        return Generation(tok.decode(mid[:cut]), mid[:cut], nfe, time.perf_counter() - t0, "length",
                          {"tokens_per_step": middle_tokens / max(nfe, 1)})

    # ------------------------------------------------------------------ internals
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
        return choose_commits(logits, window, masked, k, threshold, opts.get("remasking") or "low_confidence",
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
