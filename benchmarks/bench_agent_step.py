"""Agent action cost, AR vs DLLM, today's samplers vs the fast ones, measured side by side in one run.

Every assistant action of oracle DocQA trajectories becomes one prompt (its gold context). Each
prompt is decoded by every arm in turn (the order rotates), so machine load hits all arms alike:

* ``AR today`` / ``DLLM today``: the samplers as of main 39d1999 (frozen in tests/legacy_sampling.py);
* ``AR fast`` / ``DLLM fast``: the current samplers, same settings (forced tokens off);
* ``... + forced``: the current samplers with ``forced_tokens=True`` (jump-forward / block pre-fill).

All arms use the agent's settings: tool-call constraint, stop at ``<|end|>``, 64 new tokens, DLLM
block 8 and threshold 0.9, one thread. One extra, instrumented round splits each arm's time into
forward pass, constraint, commit bookkeeping, stop checks and the rest (Python overhead).

The model. ``--ar``/``--dllm`` name trained checkpoints of one shape (the compare run's
``sft_ar/final`` and ``sft_dllm/final``). Without them (the default) both backbones run one
randomly initialised model of the compare shape (``small``, vocab of the run's tokenizer, 1024
context, smear) behind an *oracle replay* head: the logit of the oracle's token at each position
gets a bias drawn from [6, 12] (confidence 0.3-0.99), so the actions, the constraint's work and
the commit pattern are those of a model that knows the answer, and the forward pass is the real
one. Per-pass costs are real; NFE and tokens per pass are those of the replay, not of a trained
DLLM.

Usage (one command; about 3 minutes on an idle machine):
    python benchmarks/bench_agent_step.py [--run runs/base] [--actions 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the frozen reference samplers

import legacy_sampling  # noqa: E402
from legacy_sampling import LegacyAR, LegacyConstraint, LegacyDiffusion  # noqa: E402
from unimask.agent import tool_call_schema  # noqa: E402
from unimask.agent.constraint import ToolCallConstraint  # noqa: E402
from unimask.envs.docqa import DocQAEnvironment, oracle_trajectories  # noqa: E402
from unimask.model import Transformer  # noqa: E402
from unimask.presets import model_preset  # noqa: E402
from unimask.sampling import ARBackbone, DiffusionBackbone, load_backbone  # noqa: E402
from unimask.sampling import ar as ar_module  # noqa: E402
from unimask.sampling import diffusion as diffusion_module  # noqa: E402
from unimask.tokenizer import Tokenizer, special  # noqa: E402
from unimask.tokenizer.chat import Turn, render_text  # noqa: E402


class OracleReplay(torch.nn.Module):
    """A model's forward pass plus a bias on the oracle's token at every generated position."""

    def __init__(self, inner: Any, lo: float = 6.0, hi: float = 12.0):
        super().__init__()
        self.inner, self.cfg, self.lo, self.hi = inner, inner.cfg, lo, hi
        self.target: Tensor | None = None
        self.prompt_len = 0

    def new_kv_cache(self, *a: Any, **k: Any) -> Any:
        return self.inner.new_kv_cache(*a, **k)

    def aim(self, prompt_len: int, action: list[int], end: int, index: int) -> None:
        g = torch.Generator().manual_seed(index)
        n = self.cfg.max_seq_len
        self.target = torch.full((n + 1,), end, dtype=torch.long)
        self.target[prompt_len : prompt_len + len(action)] = torch.tensor(action)
        self.bias = self.lo + (self.hi - self.lo) * torch.rand(n + 1, generator=g)

    def forward(self, ids: Tensor, attention: Any = None, kv_cache: Any = None, commit: bool = True) -> Tensor:
        logits = self.inner(ids, attention, kv_cache=kv_cache, commit=commit)
        T = ids.shape[1]
        pos = attention.position_ids[:, -T:]
        noisy = attention.noisy[:, -T:]
        at = (pos + (~noisy).long()).clamp_max(self.cfg.max_seq_len)  # clean tokens predict the next one
        bonus = torch.zeros_like(logits).scatter(-1, self.target[at][..., None], self.bias[at][..., None].to(logits.dtype))
        return logits + bonus



class Profile:
    """Exclusive time per (arm, category) of wrapped callables; an ``absorb`` category keeps its callees.

    Everything is wrapped once and ``arm`` says whose time it is, so the instrumented round
    interleaves the arms like the timed ones.
    """

    def __init__(self) -> None:
        self.t: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.arm = ""
        self.stack: list[list[Any]] = []
        self.undo: list[Callable[[], None]] = []
        self.done: set[tuple[int, str]] = set()

    def wrap(self, owner: Any, name: str, cat: str | Callable[..., str], absorb: bool = False) -> None:
        if (id(owner), name) in self.done:
            return
        self.done.add((id(owner), name))
        fn = getattr(owner, name)
        had = isinstance(owner, type) or name in vars(owner)

        def timed(*a: Any, **k: Any) -> Any:
            if any(s[3] for s in self.stack):
                return fn(*a, **k)
            self.stack.append([cat if isinstance(cat, str) else cat(*a, **k), time.perf_counter(), 0.0, absorb])
            try:
                return fn(*a, **k)
            finally:
                c, t0, child, _ = self.stack.pop()
                dt = time.perf_counter() - t0
                self.t[self.arm][c] += dt - child
                self.calls[self.arm][c] += 1
                if self.stack:
                    self.stack[-1][2] += dt

        original = vars(owner).get(name) if had else None
        setattr(owner, name, timed)
        self.undo.append(lambda: setattr(owner, name, original) if had else delattr(owner, name))

    def restore(self) -> None:
        for f in reversed(self.undo):
            f()
        self.undo.clear()


CONSTRAINT_NEW = ("commit_run", "best_valid", "mask_logits", "advance", "forced_ids", "is_complete", "start")
CONSTRAINT_OLD = ("commit_run", "best_valid", "mask_logits", "advance", "complete", "valid", "start")


PROMPT_PASS_TOKENS = 32  # a pass over more new tokens than this carries the (re-encoded) prompt


def forward_kind(ids: Tensor, *a: Any, **k: Any) -> str:
    """Profile category of a forward pass: the one that encodes the prompt, or a decoding pass."""
    return "forward: prompt pass" if ids.shape[1] > PROMPT_PASS_TOKENS else "forward: decoding passes"


def instrument(prof: Profile, arm: str, backbone: Any, constraint: Any, model: Any, tok: Tokenizer) -> None:
    prof.wrap(model, "forward", forward_kind, absorb=True)
    for name in CONSTRAINT_OLD if isinstance(constraint, LegacyConstraint) else CONSTRAINT_NEW:
        prof.wrap(constraint, name, "constraint", absorb=True)
    prof.wrap(tok, "decode", "stop checks, detokenise")
    if arm.startswith("DLLM"):
        prof.wrap(backbone, "_step", "commit bookkeeping")
        prof.wrap(backbone, "_finish", "stop checks, detokenise")
        if not isinstance(backbone, LegacyDiffusion):
            prof.wrap(diffusion_module._Action, "prefill", "commit bookkeeping")
            prof.wrap(diffusion_module._Stops, "watch", "stop checks, detokenise")
    else:
        module = legacy_sampling if isinstance(backbone, LegacyAR) else ar_module
        prof.wrap(module, "sample_tokens", "commit bookkeeping")


def action_pairs(run: Path, cache: Path, tok: Tokenizer, limit: int) -> tuple[list[tuple[str, str]], Any]:
    """(prompt, oracle action) pairs and the tools, from the run's val trajectories or fresh ones."""
    env = DocQAEnvironment(run / "cache" if (run / "cache").is_dir() else cache, task_types=["module", "default"],
                           seed=0)
    path = run / "trajectories" / "val.jsonl"
    records = ([json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else
               oracle_trajectories(env, "val", tok, 0.1, 0, limit))
    pairs = []
    for rec in records:
        turns = [Turn.from_dict(t) for t in rec["turns"]]
        pairs += [(render_text(turns[:i], add_generation_prompt=True), t.content) for i, t in enumerate(turns)
                  if t.is_action]
    step = max(1, len(pairs) // limit)
    return pairs[::step][:limit], env.tools()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/base", help="a compare run: its tokenizer, trajectories and corpus cache")
    ap.add_argument("--ar", default="", help="an AR checkpoint (default: the oracle-replay model)")
    ap.add_argument("--dllm", default="", help="a block-diffusion checkpoint of the same shape")
    ap.add_argument("--cache", default="/tmp/unimask_bench_cache", help="DocQA cache when the run has none")
    ap.add_argument("--actions", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    run = Path(args.run)
    tok = Tokenizer.load(run / "data") if (run / "data" / "tokenizer.json").is_file() else None
    if tok is None:
        raise SystemExit(f"{run}/data/tokenizer.json not found: pass --run a compare run directory")
    pairs, tools = action_pairs(run, Path(args.cache), tok, args.actions)
    constraint = ToolCallConstraint(tool_call_schema(tools))
    legacy = LegacyConstraint(constraint)
    dec = {"max_new_tokens": 64, "stop": [special.END_OF_TURN]}
    if args.ar and args.dllm:
        ar_bb, dl_bb = load_backbone(args.ar, device="cpu"), load_backbone(args.dllm, device="cpu")
        models = {"AR": ar_bb.model, "DLLM": dl_bb.model}
        replay = None
        block, shift = getattr(dl_bb, "block_length", 8), getattr(dl_bb, "shift", False)  # an AR model: cost only
        what = f"checkpoints {args.ar} (AR) and {args.dllm} (DLLM)"
    else:
        torch.manual_seed(0)
        inner = Transformer(model_preset("small", vocab_size=tok.vocab_size, max_seq_len=1024, smear=True)).eval()
        replay = OracleReplay(inner).eval()
        models = {"AR": replay, "DLLM": replay}
        what = "one random model of the compare shape (small, 1024 context, smear) behind the oracle replay head"
        block, shift = 8, False
    arms: dict[str, tuple[Any, dict[str, Any], Any]] = {
        "AR today": (LegacyAR(models["AR"], tok), {}, legacy),
        "AR fast": (ARBackbone(models["AR"], tok), {}, constraint),
        "AR fast + forced": (ARBackbone(models["AR"], tok), {"forced_tokens": True}, constraint),
        "DLLM today": (LegacyDiffusion(models["DLLM"], tok, block_length=block, shift=shift), {"threshold": 0.9}, legacy),
        "DLLM fast": (DiffusionBackbone(models["DLLM"], tok, block_length=block, shift=shift), {"threshold": 0.9}, constraint),
        "DLLM fast + forced": (DiffusionBackbone(models["DLLM"], tok, block_length=block, shift=shift),
                               {"threshold": 0.9, "forced_tokens": True}, constraint),
    }
    prompt_ids = [tok.encode(p) for p, _ in pairs]
    actions = [tok.encode(a) for _, a in pairs]

    def decode_one(arm: str, i: int) -> Any:
        backbone, opts, c = arms[arm]
        if replay is not None:
            replay.aim(len(prompt_ids[i]), actions[i], tok.end_of_turn_id, i)
        return backbone.generate([""], prompt_ids=[prompt_ids[i]], constraint=c, **dec, **opts)[0]

    for arm in arms:  # warm-up
        decode_one(arm, 0)
    walls: dict[str, list[float]] = defaultdict(list)
    outs: dict[str, list[Any]] = {}
    names = list(arms)
    for r in range(args.repeats):
        for i in range(len(pairs)):
            order = names[(i + r) % len(names):] + names[: (i + r) % len(names)]
            for arm in order:
                t = time.perf_counter()
                g = decode_one(arm, i)
                walls[arm].append(time.perf_counter() - t)
                if r == 0:
                    outs.setdefault(arm, []).append(g)
    profiled = ("AR today", "AR fast", "DLLM today", "DLLM fast")
    prof = Profile()
    for arm in profiled:
        backbone, _, c = arms[arm]
        instrument(prof, arm, backbone, c, models[arm.split()[0]], tok)
    totals: dict[str, float] = defaultdict(float)
    for i in range(len(pairs)):
        for arm in profiled[i % 4:] + profiled[: i % 4]:
            prof.arm = arm
            t = time.perf_counter()
            decode_one(arm, i)
            totals[arm] += time.perf_counter() - t
    prof.restore()
    profiles: dict[str, dict[str, float]] = {}
    for arm in profiled:
        nfe = sum(g.nfe for g in outs[arm])
        row = {k: 1000 * v / nfe for k, v in prof.t[arm].items()}
        row["Python overhead (loop, tensors, structures)"] = 1000 * (totals[arm] - sum(prof.t[arm].values())) / nfe
        row["total per pass"] = 1000 * totals[arm] / nfe
        n_decoding = nfe - prof.calls[arm]["forward: prompt pass"]
        row["decoding pass, forward only (ms each)"] = 1000 * prof.t[arm]["forward: decoding passes"] / max(1, n_decoding)
        row["prompt pass, forward only (ms each)"] = 1000 * prof.t[arm]["forward: prompt pass"] / max(1, prof.calls[arm]["forward: prompt pass"])
        profiles[arm] = row
    load_end = os.getloadavg()

    n = len(pairs)
    print(f"bench_agent_step: {n} oracle actions from {run}, {what}; constraint on, 64 new tokens, DLLM block "
          f"{block} threshold 0.9; {args.threads} thread(s), {args.repeats} interleaved repeats")
    print(f"load average (1/5/15 min) at start {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, at end "
          f"{load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} on {os.cpu_count()} CPUs: absolute times are under "
          f"this load, the ratios are the result\n")
    per_pass = {}
    print("| arm | wall per action (median) | NFE per action | tokens per action | tokens per pass | ms per pass "
          "| forced-token share | same output as today |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for arm in names:
        gens = outs[arm]
        nfe = sum(g.nfe for g in gens)
        toks = sum(len(g.token_ids) for g in gens)
        per_action = [w / max(1, g.nfe) for w, g in zip(walls[arm], gens * args.repeats, strict=True)]
        per_pass[arm] = median(per_action)
        forced = sum(g.info.get("forced_tokens", 0) for g in gens)
        base = outs[arm.split()[0] + " today"]
        same = sum(a.text == b.text for a, b in zip(gens, base, strict=True)) / n
        print(f"| {arm} | {1000 * median(walls[arm]):.0f} ms | {nfe / n:.1f} | {toks / n:.1f} | {toks / nfe:.2f} | "
              f"{1000 * per_pass[arm]:.2f} | {100 * forced / max(1, toks):.0f}% | {100 * same:.0f}% |")
    print("\nPer-pass profile (ms per forward pass, one instrumented round, arms interleaved; the wrappers add a little):\n")
    cats = ["forward: prompt pass", "forward: decoding passes", "constraint", "commit bookkeeping", "stop checks, detokenise",
            "Python overhead (loop, tensors, structures)", "total per pass", "decoding pass, forward only (ms each)",
            "prompt pass, forward only (ms each)"]
    print("| ms per pass | " + " | ".join(profiles) + " |")
    print("| --- |" + " ---: |" * len(profiles))
    for c in cats:
        print(f"| {c} | " + " | ".join(f"{profiles[a].get(c, 0.0):.2f}" for a in profiles) + " |")
    print("\nRatios (medians of per-action ratios' inputs, same run):")

    def ratio(a: str, b: str) -> str:
        return f"{median(walls[a]) / median(walls[b]):.2f}x"

    for label, dl, ar in (("today", "DLLM today", "AR today"), ("fast", "DLLM fast", "AR fast"),
                          ("fast + forced", "DLLM fast + forced", "AR fast + forced")):
        print(f"- {label}: DLLM per-pass / AR per-step = {per_pass[dl] / per_pass[ar]:.2f}x; "
              f"AR / DLLM wall per action = {ratio(ar, dl)} (>1: DLLM faster)")
    key = "decoding pass, forward only (ms each)"
    print(f"- decoding passes alone (forward only, prompt pass excluded): DLLM / AR = "
          f"{profiles['DLLM fast'][key] / profiles['AR fast'][key]:.2f}x (fast), "
          f"{profiles['DLLM today'][key] / profiles['AR today'][key]:.2f}x (today)")
    print(f"- speed-up of the fast samplers: AR {ratio('AR today', 'AR fast')}, DLLM {ratio('DLLM today', 'DLLM fast')}"
          f"; with forced tokens AR {ratio('AR today', 'AR fast + forced')}, "
          f"DLLM {ratio('DLLM today', 'DLLM fast + forced')}")


if __name__ == "__main__":
    main()
