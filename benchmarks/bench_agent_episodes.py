"""End-to-end agent episodes, AR vs DLLM, on a compare run's checkpoints, arms interleaved task by task.

The per-action benchmark (``bench_agent_step.py``) decodes gold contexts; this one runs whole
DocQA episodes as ``unimask compare`` does (same tasks, loop settings and decoding defaults, read
from the run's ``compare_config.json``), in one process on one thread, every arm on every task in
turn (rotating order), so that the machine's load hits all arms alike. Arms: AR and DLLM as the
compare run decodes them, and each again with ``prefix_cache`` off (every round prefills its whole
prompt, as before prefix caching).

Reported per arm: EM, rounds, NFE per task, tokens per pass, model time per pass, wall per task;
the paired-bootstrap speed-up of DLLM over AR (with and without the prefix cache) and the share of
episodes whose every action is identical with and without the prefix cache.

Usage (about 4 minutes for 120 tasks on an idle 2-core machine):
    python benchmarks/bench_agent_episodes.py --run runs/compare [--tasks 120]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from unimask.agent.loop import run_paired_episodes
from unimask.config import from_dict
from unimask.experiments.compare import CompareConfig, agent_tasks, environment, spread
from unimask.experiments.report import paired_speedup, summarize
from unimask.sampling import load_backbone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished compare run directory")
    ap.add_argument("--ar", default="", help="AR checkpoint (default: RUN/sft_ar/final)")
    ap.add_argument("--dllm", default="", help="DLLM checkpoint (default: RUN/sft_dllm/final)")
    ap.add_argument("--tasks", type=int, default=120, help="test tasks, spread over the run's task list")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dllm-option", action="append", default=[], metavar="NAME=VALUE",
                    help="a DecodingOptions override for the DLLM arms (JSON value), e.g. block_length=4")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = from_dict(CompareConfig, {k: v for k, v in json.loads((run / "compare_config.json").read_text()).items()
                                    if k in CompareConfig.__dataclass_fields__})
    env = environment(cfg, run)
    tasks, loop = agent_tasks(cfg, env)
    tasks = spread(tasks, args.tasks)
    ckpt = {"AR": args.ar or run / "sft_ar" / "final", "DLLM": args.dllm or run / "sft_dllm" / "final"}
    decoding = {"AR": {}, "DLLM": {"threshold": cfg.threshold,
                                   **{k: json.loads(v) for k, v in (o.split("=", 1) for o in args.dllm_option)}}}
    backbones = {}
    for arm in ("AR", "DLLM"):
        for cache in (True, False):
            label = arm if cache else f"{arm}, no prefix cache"
            backbones[label] = load_backbone(ckpt[arm], device="cpu", forced_tokens=cfg.forced_tokens,
                                             prefix_cache=cache, **decoding[arm])
    load = os.getloadavg()
    t0 = time.perf_counter()
    episodes = run_paired_episodes(env, tasks, backbones, loop)
    took = time.perf_counter() - t0
    load_end = os.getloadavg()

    print(f"bench_agent_episodes: {len(tasks)} test tasks of {run} ({ckpt['AR']} / {ckpt['DLLM']}), forced tokens "
          f"{'on' if cfg.forced_tokens else 'off'}, DLLM options {decoding['DLLM']}; {args.threads} thread(s); "
          f"{took / 60:.1f} min")
    print(f"load average (1/5/15 min) at start {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, at end "
          f"{load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f} on {os.cpu_count()} CPUs\n")
    print("| arm | EM | rounds | NFE per task | tokens per pass | model ms per pass | model s per task | wall per task |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, eps in episodes.items():
        s = summarize(eps)
        print(f"| {label} | {100 * s['em']:.1f}% | {s['rounds_mean']:.2f} | {s['nfe_mean']:.1f} | "
              f"{s['tokens_per_nfe']:.2f} | {1000 * s['model_time_mean'] / s['nfe_mean']:.2f} | "
              f"{s['model_time_mean']:.3f} | {s['wall_mean']:.3f} s |")
    print()
    for suffix in ("", ", no prefix cache"):
        sp = paired_speedup(episodes["AR" + suffix], episodes["DLLM" + suffix])
        print(f"- DLLM over AR{suffix or ' (prefix cache on)'}: {sp['speedup']:.2f}x wall per task "
              f"(paired bootstrap 95% CI {sp['lo']:.2f}-{sp['hi']:.2f}, {sp['tasks']} tasks)")
    for arm in ("AR", "DLLM"):
        on, off = episodes[arm], episodes[f"{arm}, no prefix cache"]
        same = sum([r["action"] for r in a["round_log"]] == [r["action"] for r in b["round_log"]]
                   for a, b in zip(on, off, strict=True))
        sp = paired_speedup(off, on)
        print(f"- {arm}: prefix cache {sp['speedup']:.2f}x faster per task (CI {sp['lo']:.2f}-{sp['hi']:.2f}); "
              f"episodes with every action identical: {same}/{len(on)}")


if __name__ == "__main__":
    main()
