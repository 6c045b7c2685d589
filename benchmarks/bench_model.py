"""Forward+backward throughput and peak memory: unimask Transformer vs transformers' Llama.

Same config, same weights, same random batches, interleaved repeats in one process; prints the
tokens/s ratio (goal >= 1.0x). Usage: python benchmarks/bench_model.py [--d-model 256 ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from unimask.model import Transformer
from unimask.model.config import ModelConfig
from unimask.model.hf import to_hf_llama


def step_time(fn, batches, warmup: int) -> float:
    for b in batches[:warmup]:
        fn(b)
    t = time.perf_counter()
    for b in batches[warmup:]:
        fn(b)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arm", choices=["unimask", "transformers"], default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                      max_seq_len=args.seq)
    ours = Transformer(cfg).train()
    hf = to_hf_llama(ours).train()
    hf.config._attn_implementation = "sdpa"
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq)) for _ in range(args.steps + args.warmup)]

    def run_ours(x):
        logits = ours(x)
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten()).backward()

    def run_hf(x):
        hf(input_ids=x, labels=x).loss.backward()

    arms = {"unimask": run_ours, "transformers": run_hf}
    if args.arm:
        t = min(step_time(arms[args.arm], batches, args.warmup) for _ in range(args.repeats))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"tps": args.steps * args.batch * args.seq / t, "rss_mb": rss}))
        return
    # each arm in its own process (clean peak-memory numbers), interleaved, best of two
    res: dict[str, list[dict]] = {"unimask": [], "transformers": []}
    for _ in range(2):
        for arm in ("transformers", "unimask"):
            out = subprocess.run([sys.executable, __file__, "--arm", arm, *sys.argv[1:]], capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            res[arm].append(json.loads(out))
    tps = {k: max(r["tps"] for r in v) for k, v in res.items()}
    rss = {k: min(r["rss_mb"] for r in v) for k, v in res.items()}
    print(f"config d_model={args.d_model} layers={args.layers} heads={args.heads} vocab={args.vocab} "
          f"seq={args.seq} batch={args.batch} threads={args.threads}")
    for k in tps:
        print(f"{k:>12}: {tps[k]:9.0f} tokens/s (fwd+bwd), peak RSS {rss[k]:.0f} MB")
    print(f"ratio unimask/transformers: {tps['unimask'] / tps['transformers']:.2f}x tokens/s, "
          f"{rss['unimask'] / rss['transformers']:.2f}x peak memory")


if __name__ == "__main__":
    main()
