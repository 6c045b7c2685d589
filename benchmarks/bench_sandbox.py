"""Sandbox cost: one sandboxed run vs a bare ``python -I`` subprocess, and HumanEval execution throughput.

Usage: python benchmarks/bench_sandbox.py [--runs 20] [--workers 2]
Prints the per-run latency of each, their ratio, and canonical-solution throughput with 1 vs N workers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from unimask.evals.humaneval import humaneval_tasks, load_problems
from unimask.sandbox import SandboxLimits, run_many, run_python


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--problems", type=int, default=40)
    args = ap.parse_args()
    src = "import math\nprint(sum(math.isqrt(i) for i in range(1000)))"

    t0 = time.perf_counter()
    for _ in range(args.runs):
        subprocess.run([sys.executable, "-I", "-c", src], capture_output=True, check=True)
    bare = (time.perf_counter() - t0) / args.runs

    t0 = time.perf_counter()
    for _ in range(args.runs):
        assert run_python(src).status == "ok"
    boxed = (time.perf_counter() - t0) / args.runs
    print(
        f"bare python -I: {1000 * bare:.1f} ms/run   sandbox: {1000 * boxed:.1f} ms/run   "
        f"ratio sandbox/bare: {boxed / bare:.2f}x   layers: {run_python('pass').isolation}"
    )

    problems = load_problems(limit=args.problems)
    programs = [
        t.program(p["canonical_solution"]) for t, p in zip(humaneval_tasks(problems), problems, strict=True)
    ]
    rates = {}
    for w in (1, args.workers):
        t0 = time.perf_counter()
        rs = run_many(programs, SandboxLimits(wall_time=5), workers=w)
        rates[w] = len(programs) / (time.perf_counter() - t0)
        assert all(r.passed for r in rs)
    print(
        f"HumanEval canonical programs/s: 1 worker {rates[1]:.1f}, {args.workers} workers "
        f"{rates[args.workers]:.1f} (ratio {rates[args.workers] / rates[1]:.2f}x)"
    )


if __name__ == "__main__":
    main()
