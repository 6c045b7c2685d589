"""Diffusion decoding: forward passes (NFE) and wall time of confidence-threshold parallel decoding
vs LLaDA's one token per step, at measured output quality.

Every assistant action of the given oracle trajectories becomes one prompt (the gold context up to
that action), so quality is measurable whatever the model's task accuracy: the generated action is
compared with the oracle's (exact match), with the one-token-per-step output (agreement), and
checked against the tool schema (valid). All settings decode the same prompts with the same
tool-call constraint the agent loop uses.

Usage (after ``unimask compare``):
    python benchmarks/bench_diffusion_decoding.py runs/compare/sft_dllm/final \
        runs/compare/trajectories/val.jsonl --actions 120
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from unimask.agent import parse_action, tool_call_schema
from unimask.agent.constraint import ToolCallConstraint
from unimask.envs.docqa import DocQAEnvironment
from unimask.sampling import load_backbone
from unimask.tokenizer import special as sp
from unimask.tokenizer.chat import Turn, render_text

SETTINGS: dict[str, dict[str, Any]] = {
    "one token/step": {"threshold": None, "steps": None},
    "threshold 0.9": {"threshold": 0.9},
    "threshold 0.7": {"threshold": 0.7},
    "threshold 0.5": {"threshold": 0.5},
    "threshold 0.3": {"threshold": 0.3},
}


def action_prompts(path: str, limit: int) -> list[tuple[str, str]]:
    """(prompt, oracle action) for every trainable assistant turn, in file order."""
    pairs = []
    for line in open(path, encoding="utf-8"):
        turns = [Turn.from_dict(t) for t in json.loads(line)["turns"]]
        for i, t in enumerate(turns):
            if t.is_action:
                pairs.append((render_text(turns[:i], add_generation_prompt=True), t.content))
        if len(pairs) >= limit:
            break
    return pairs[:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt", help="a block-diffusion checkpoint, e.g. runs/compare/sft_dllm/final")
    ap.add_argument("trajectories", help="oracle trajectories JSONL, e.g. runs/compare/trajectories/val.jsonl")
    ap.add_argument("--actions", type=int, default=120)
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no_constraint", action="store_true")
    ap.add_argument("--cache", default="runs/compare/cache", help="the DocQA corpus cache (for the tools)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tools = DocQAEnvironment(args.cache).tools()
    constraint = None if args.no_constraint else ToolCallConstraint(tool_call_schema(tools))
    pairs = action_prompts(args.trajectories, args.actions)
    prompts = [p for p, _ in pairs]
    backbone = load_backbone(args.ckpt, device="cpu")
    backbone.generate(prompts[:2], max_new_tokens=8, stop=[sp.END_OF_TURN])  # warm-up
    rows: dict[str, dict[str, Any]] = {}
    for label, decoding in SETTINGS.items():
        t = time.perf_counter()
        gens = backbone.generate(prompts, max_new_tokens=args.max_new_tokens, stop=[sp.END_OF_TURN],
                                 constraint=constraint, **decoding)
        rows[label] = {"wall": time.perf_counter() - t, "nfe": sum(g.nfe for g in gens),
                       "tokens": sum(len(g.token_ids) for g in gens), "texts": [g.text for g in gens]}
    base = rows["one token/step"]
    n = len(prompts)
    print(f"{args.ckpt}: {n} oracle actions from {args.trajectories}, budget {args.max_new_tokens} tokens, "
          f"constraint {'off' if constraint is None else 'on'}, {args.threads} thread(s)\n")
    print("| setting | NFE per action | tokens per pass | wall per action | NFE vs one token/step "
          "| action EM vs oracle | tool as oracle | valid calls | same as one token/step |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    gold_tools = [parse_action(g, tools).name for _, g in pairs]
    for label, r in rows.items():
        em = sum(a.strip() == g.strip() for a, (_, g) in zip(r["texts"], pairs, strict=True)) / n
        parsed = [parse_action(a, tools) for a in r["texts"]]
        valid = sum(p.failure is None for p in parsed) / n
        tool = sum(p.name == g for p, g in zip(parsed, gold_tools, strict=True)) / n
        same = sum(a == b for a, b in zip(r["texts"], base["texts"], strict=True)) / n
        print(f"| {label} | {r['nfe'] / n:.1f} | {r['tokens'] / max(1, r['nfe']):.2f} | "
              f"{1000 * r['wall'] / n:.0f} ms | {base['nfe'] / r['nfe']:.2f}x fewer | {100 * em:.1f}% | "
              f"{100 * tool:.1f}% | {100 * valid:.1f}% | {100 * same:.1f}% |")


if __name__ == "__main__":
    main()
