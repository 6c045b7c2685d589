"""Diffusion decoding: LLaDA-style masked diffusion and context-causal block diffusion.

One step = one forward pass (one NFE) over the masked positions of the current block; the
positions committed per step are chosen by

* a fixed schedule (LLaDA): ``steps`` per block, the block's masks split evenly over them, the
  most confident (``remasking="low_confidence"``) or random positions committed first;
* a confidence threshold (Fast-dLLM): every masked position whose confidence exceeds
  ``threshold`` is committed at once (at least one per step) -- parallel decoding.

Caching. ``mode="block"`` (block-diffusion checkpoints, clean context causal): the prompt and
every finished block go into an *exact* KV cache; a block is decoded against it with
``commit=False`` and committed together with the first step of the next block. With
``prefix_cache`` that cache outlives the call: the next prompt prefills only what follows its
common prefix with the cached tokens (an agent's next round, the next task's system prompt). ``mode="full"``
(LLaDA-style bidirectional models): ``cache="none"`` recomputes everything each step,
``"prefix"`` caches the keys of everything before the current block once per block
(approximate, Fast-dLLM's prefix cache), ``"dual"`` caches the suffix too.

Shifted models (``shift=True``; Dream, and unimask DLLMs adapted from an AR model with shifted
targets): the logits at position i predict token i+1, so a block's first token is read from the
last clean token's logits and every other masked token from its predecessor's.

Generation stops as soon as the committed left-contiguous prefix holds EOS/pad or a stop string,
mid-block included: no position after the end of the action costs a step. With a constraint,
tokens it leaves no choice about are written without a forward pass: the end of turn once the
action is complete (always; a block that would only hold it is never decoded) and, with
``forced_tokens=True``, the schema's forced continuations, pre-filled into the block's next
positions before the pass that decodes the rest.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from unimask.model.attention import AttentionStructure
from unimask.objectives.contract import BackboneKind
from unimask.sampling.backbone import Generation
from unimask.sampling.constraint import Constraint
from unimask.sampling.decoding import add_gumbel_noise, find_stop, make_generator
from unimask.sampling.options import DecodingOptions, Remasking
from unimask.sampling.prefix_cache import PrefixCache
from unimask.tokenizer import Tokenizer

Mode = Literal["block", "full"]
# the decoder each diffusion kind (``DecoderSpec.backbone``) runs: exact-cache blocks, or LLaDA-style
MODES: dict[BackboneKind, Mode] = {"block_diffusion": "block", "masked_diffusion": "full"}


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
    if threshold is not None:  # every confident position, else the most confident one
        sel = conf > threshold
        best = torch.zeros_like(sel).scatter(-1, conf.argmax(-1, keepdim=True), True)
        commit = (sel | (best & ~sel.any(-1, keepdim=True))) & torch.isfinite(conf)
    else:  # the schedule may run out when a constraint held positions back: at least one per step
        n = k.clamp_min(1)
        top = torch.topk(conf, int(n.max()), dim=-1).indices
        first_n = torch.arange(top.shape[-1], device=top.device)[None] < n[:, None]
        commit = torch.zeros_like(masked).scatter(-1, top, first_n)
    commit &= masked
    return torch.where(commit, x0, x), commit


@dataclass
class _Action:
    """The constrained action being decoded: its parser state and the tokens forced next."""

    constraint: Constraint
    tokenizer: Tokenizer
    forced_tokens: bool
    state: Any
    queue: list[int] = field(default_factory=list)  # forced tokens not yet written (cross block ends)
    n_forced: int = 0

    def prefill(self, window: Tensor, masked: Tensor) -> None:
        """Write what the constraint forces at the window's first masked positions (no forward pass)."""
        m = masked[0].tolist()
        if True not in m:
            return
        c, tok = self.constraint, self.tokenizer
        for j in range(m.index(True), len(m)):
            if not m[j]:
                break
            if c.is_complete(self.state):
                t = tok.end_of_turn_id
            else:
                if not self.queue and self.forced_tokens:
                    self.queue = c.forced_ids(self.state, tok)[0]
                if not self.queue:
                    break
                t = self.queue.pop(0)
                self.n_forced += 1
                self.state = c.advance(self.state, t, tok)
            window[0, j] = t
            masked[0, j] = False

    def step(self, logits: Tensor, window: Tensor, masked: Tensor, threshold: float | None) -> tuple[Tensor, Tensor]:
        """A constrained step: commit the left-contiguous run ``constraint.commit_run`` allows."""
        m = masked[0].tolist()
        commits, self.state = self.constraint.commit_run(self.state, m, m.index(True), logits[0], self.tokenizer,
                                                         threshold, self.tokenizer.mask_id)
        commit = torch.zeros_like(masked)
        if commits:
            pos = torch.tensor([p for p, _ in commits], device=window.device)
            window = window.clone()
            window[0, pos] = torch.tensor([t for _, t in commits], device=window.device)
            commit[0, pos] = True
        return window, commit


class _Stops:
    """Watches the committed left-contiguous prefix of the generation for EOS/pad or a stop string."""

    def __init__(self, tokenizer: Tokenizer, stop_ids: set[int], stops: list[str]):
        self.tokenizer, self.stop_ids, self.stops = tokenizer, stop_ids, stops
        self.ids: list[int] = []
        self.hit = False

    def extend(self, ids: list[int]) -> bool:
        if ids and not self.hit:
            self.ids += ids
            self.hit = any(t in self.stop_ids for t in ids) or (
                bool(self.stops) and find_stop(self.tokenizer.decode(self.ids), self.stops) >= 0)
        return self.hit

    def watch(self, window: Tensor, masked: Tensor, done: int) -> tuple[int, bool]:
        """Extend by the window's newly committed prefix (``done`` positions were seen before)."""
        m = masked[0].tolist()
        upto = m.index(True) if True in m else len(m)
        if upto > done:
            self.extend(window[0, done:upto].tolist())
        return max(upto, done), self.hit


class DiffusionBackbone:
    """``generate`` for diffusion checkpoints (see the module docstring for the modes)."""

    def __init__(self, model: Any, tokenizer: Tokenizer, mode: Mode = "block",
                 block_length: int = 16, device: str | torch.device | None = None, shift: bool = False,
                 **defaults: Any):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mode = mode
        kinds = [k for k, m in MODES.items() if m == mode]
        if not kinds:
            raise ValueError(f"unknown diffusion mode {mode!r}: use one of {', '.join(MODES.values())}")
        self.kind: BackboneKind = kinds[0]
        self.shift = shift
        self.block_length = block_length
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.defaults = DecodingOptions().replace(**defaults)
        self.max_len = model.cfg.max_seq_len
        self.prefix = PrefixCache(model)

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        stop: Sequence[str] | None = None,
        constraint: Constraint | None = None,
        on_update: Callable[[int, str], None] | None = None,
        prompt_ids: Sequence[list[int]] | None = None,
        **decoding: Any,
    ) -> list[Generation]:
        # An explicit ``threshold=None`` switches to LLaDA's fixed schedule; omit it for the default.
        opts = self.defaults.replace(**decoding)
        ids_list = list(prompt_ids) if prompt_ids is not None else [self.tokenizer.encode_prompt(p) for p in prompts]
        if not ids_list or any(len(p) == 0 for p in ids_list):
            raise ValueError("every prompt must be non-empty")
        return [self._one(ids, max_new_tokens, list(stop or []), constraint, on_update, i, opts)
                for i, ids in enumerate(ids_list)]

    def infill(self, prefix: str, suffix: str, middle_tokens: int, **decoding: Any) -> Generation:
        """Native diffusion infilling: masks between a prefix and a suffix, decoded bidirectionally."""
        tok = self.tokenizer
        pre, suf = tok.encode(prefix), tok.encode(suffix)
        x = torch.tensor([pre + [tok.mask_id] * middle_tokens + suf], device=self.device)
        opts = self.defaults.replace(**decoding)
        t0 = time.perf_counter()
        region = slice(len(pre), len(pre) + middle_tokens)
        x, nfe = self._denoise_full(x, region, opts, generator=make_generator(opts.seed, self.device))
        mid = x[0, region].tolist()
        cut = next((i for i, t in enumerate(mid) if t in (tok.eos_id, tok.pad_id, tok.eom_id)), len(mid))
        return Generation(tok.decode(mid[:cut]), mid[:cut], nfe, time.perf_counter() - t0, "length",
                          {"tokens_per_step": middle_tokens / max(nfe, 1)})

    # ------------------------------------------------------------------ internals
    def _stop_ids(self) -> set[int]:
        return {self.tokenizer.eos_id, self.tokenizer.pad_id}

    def _one(self, prompt: list[int], max_new: int, stops: list[str], constraint: Constraint | None,
             on_update: Callable[[int, str], None] | None, index: int, opts: DecodingOptions) -> Generation:
        t0 = time.perf_counter()
        bl = int(opts.block_length or self.block_length)
        n_blocks = -(-max_new // bl)
        gen_len = n_blocks * bl
        if len(prompt) + gen_len > self.max_len:
            raise ValueError(f"prompt of {len(prompt)} tokens + {gen_len} generated exceeds the model context "
                             f"of {self.max_len}; shorten the prompt or lower max_new_tokens")
        steps = int(opts.steps or gen_len)
        steps_per_block = max(1, steps // n_blocks)
        threshold = opts.threshold
        generator = make_generator(opts.seed, self.device)
        tok = self.tokenizer
        P = len(prompt)
        x = torch.tensor([prompt + [tok.mask_id] * gen_len], device=self.device)
        action = None if constraint is None else _Action(constraint, tok, bool(opts.forced_tokens),
                                                         constraint.start())
        watch = _Stops(tok, self._stop_ids(), stops)
        nfe, reason, text, out = 0, None, "", []
        cache = None
        if self.mode == "block":
            if opts.prefix_cache:
                cache, n = self.prefix.take(prompt, P + gen_len + bl)
            else:
                cache, n = self.model.new_kv_cache(1, P + gen_len + bl), 0
            pending = x[:, n:P]  # clean tokens not yet in the cache
        for b in range(n_blocks):
            s, e = P + b * bl, P + (b + 1) * bl
            seen = len(watch.ids)
            if self.mode == "block":
                x, used = self._decode_block_cached(x, s, e, pending, cache, steps_per_block, threshold, opts,
                                                    generator, action, watch)
                # a block written without a forward pass leaves its clean context for the next one to commit
                pending = x[:, s:e] if used else torch.cat([pending, x[:, s:e]], 1)
            else:
                x, used = self._denoise_full(x, slice(s, e), dataclasses.replace(opts, steps=steps_per_block), generator,
                                             action=action, watch=watch)
            nfe += used
            text, out, reason = self._finish(x[0, P:e].tolist(), stops, seen)
            if on_update is not None:
                on_update(index, text)
            if reason is not None:
                break
        if self.mode == "block" and opts.prefix_cache:
            self.prefix.put(cache, x[0].tolist())
        info = {"tokens_per_step": len(out) / max(nfe, 1), "blocks": b + 1}
        if action is not None:
            info["forced_tokens"] = action.n_forced
        return Generation(text, out, nfe, time.perf_counter() - t0, reason or "length", info)

    def _finish(self, gen_ids: list[int], stops: list[str], seen: int = 0) -> tuple[str, list[int], str | None]:
        """Text and ids up to the first stop: ids end with the token that completes a stop string
        (searched from index ``seen``: no stop ended before it)."""
        tok = self.tokenizer
        reason = None
        for j, t in enumerate(gen_ids):
            if t in self._stop_ids() or t == tok.mask_id:
                gen_ids, reason = gen_ids[:j], "eos" if t != tok.mask_id else None
                break
        text = tok.decode(gen_ids)
        cut = find_stop(text, stops)
        if cut >= 0:
            text, reason = text[:cut], "stop"
            n = next(n for n in range(max(seen, 1), len(gen_ids) + 1) if find_stop(tok.decode(gen_ids[:n]), stops) >= 0)
            gen_ids = gen_ids[:n]
        return text, gen_ids, reason

    def _decode_block_cached(self, x: Tensor, s: int, e: int, pending: Tensor, cache: Any, steps: int,
                             threshold: float | None, opts: DecodingOptions, generator: torch.Generator | None,
                             action: _Action | None, watch: _Stops) -> tuple[Tensor, int]:
        """Exact-cache block decoding. The first pass also commits ``pending`` clean tokens."""
        tok = self.tokenizer
        start = cache.length
        n_pend = pending.shape[1]
        block = x[:, s:e].clone()
        masked = block == tok.mask_id
        if action is not None:
            action.prefill(block, masked)
        k_sched = num_transfer_tokens(masked.sum(1), steps) if threshold is None else None
        noisy = self._noisy(s, e)
        nfe, step, done = 0, 0, 0
        first = None  # shifted models: the last clean token's logits predict the block's first token
        done, stopped = watch.watch(block, masked, done)
        while not stopped and bool(masked.any()):
            if n_pend:
                inp = torch.cat([pending, block], 1)
                pos_p = torch.arange(start, start + n_pend, device=self.device)
                clean = AttentionStructure(torch.zeros(1, n_pend, dtype=torch.long, device=self.device),
                                           pos_p[None], torch.zeros(1, n_pend, dtype=torch.bool, device=self.device),
                                           pos_p[None])
                logits = self.model(inp, AttentionStructure.cat([clean, noisy]), kv_cache=cache,
                                    logits_to_keep=block.shape[1] + 1)
                first, logits = logits[:, :1], logits[:, 1:]
                cache.truncate(start + n_pend)  # keep the clean tokens, drop the noisy block
                n_pend = 0
            else:
                logits = self.model(block, noisy, kv_cache=cache, commit=False)
            if self.shift:
                if first is None:
                    raise RuntimeError("a shifted block needs the clean context's last logits; none were computed")
                logits = torch.cat([first, logits[:, :-1]], 1)
            nfe += 1
            block, commit = self._step(logits, block, masked, action, k_sched, step, threshold, opts, generator)
            masked &= ~commit
            if action is not None:
                action.prefill(block, masked)
            done, stopped = watch.watch(block, masked, done)
            step += 1
        x = x.clone()
        x[:, s:e] = block
        return x, nfe

    def _step(self, logits: Tensor, window: Tensor, masked: Tensor, action: _Action | None, k_sched: Tensor | None,
              step: int, threshold: float | None, opts: DecodingOptions,
              generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One commit decision over a window: constrained left-to-right runs, or schedule/threshold."""
        if action is not None:
            return action.step(logits, window, masked, threshold)
        k = k_sched[:, min(step, k_sched.shape[1] - 1)] if threshold is None else None
        return choose_commits(logits, window, masked, k, threshold, opts.remasking, float(opts.temperature),
                              generator, None, self.tokenizer.mask_id)

    def _noisy(self, s: int, e: int) -> AttentionStructure:
        n = e - s
        pos = torch.arange(s, e, device=self.device)[None]
        return AttentionStructure(torch.zeros(1, n, dtype=torch.long, device=self.device),
                                  torch.full((1, n), s, dtype=torch.long, device=self.device),
                                  torch.ones(1, n, dtype=torch.bool, device=self.device), pos)

    def _denoise_full(self, x: Tensor, region: slice, opts: DecodingOptions, generator: torch.Generator | None,
                      action: _Action | None = None, watch: _Stops | None = None) -> tuple[Tensor, int]:
        """LLaDA-style bidirectional denoising of ``x[:, region]`` (everything else visible)."""
        tok = self.tokenizer
        L = x.shape[1]
        s, e = region.start, region.stop
        steps = int(opts.steps or (e - s))
        threshold = opts.threshold
        cache_mode = opts.cache or "none"
        full = AttentionStructure.bidirectional(1, L, self.device)
        lo = s - int(self.shift)  # shifted: position i's logits predict token i+1
        if lo < 0:
            raise ValueError("a shifted model predicts each token from the one before it: the masked region needs "
                             "at least one token before it (a non-empty prompt or prefix)")
        blk = x[:, s:e].clone()
        masked = blk == tok.mask_id
        if action is not None:
            action.prefill(blk, masked)
            x = x.clone()
            x[:, s:e] = blk
        k_sched = num_transfer_tokens(masked.sum(1), steps) if threshold is None else None
        nfe, step, done, stopped = 0, 0, 0, False
        if watch is not None:
            done, stopped = watch.watch(blk, masked, done)
        cache = None
        while not stopped and bool(masked.any()):
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
            blk, commit = self._step(logits, x[:, s:e], masked, action, k_sched, step, threshold, opts, generator)
            masked = masked & ~commit
            if action is not None:
                action.prefill(blk, masked)
            x = x.clone()
            x[:, s:e] = blk
            if watch is not None:
                done, stopped = watch.watch(blk, masked, done)
            step += 1
        return x, nfe
