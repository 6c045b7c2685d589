"""Induction probe: how many steps until a model learns variable-offset copying?

The smallest test of the skill DocQA agents need (copying a name from the context into a call):
random sequences over an alphabet of ``--alphabet`` tokens, a prefix of 0-16 tokens, a span of
8-24 tokens, a separator, the span again, then filler; the loss covers the repeat's tokens 2..n.
Nothing but copying predicts them, so the loss falls from ln(alphabet) only once an induction
circuit forms. unimask's ``Transformer`` (plain, and with ``smear``: a projected previous-token
embedding, which makes copying a one-layer circuit) and ``transformers``' ``LlamaForCausalLM`` of
the same shape train on the same batches in one process, step for step interleaved, so the two curves are
comparable whatever the machine's load.

Usage:
    python benchmarks/bench_induction.py --preset small --vocab 4096 --steps 800 --arms unimask,unimask_smear,llama
    python benchmarks/bench_induction.py --preset small --vocab 516 --steps 800   # vocab = alphabet
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from unimask.model import Transformer
from unimask.presets import model_preset


def copy_batch(g: torch.Generator, batch: int, length: int, alphabet: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and the mask of positions whose next token is a copy target (tokens 2..n)."""
    x = torch.randint(4, 4 + alphabet, (batch, length), generator=g)
    scored = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        p = int(torch.randint(0, 17, (1,), generator=g))
        n = int(torch.randint(8, 25, (1,), generator=g))
        x[b, p + n] = 3  # separator
        x[b, p + n + 1 : p + 2 * n + 1] = x[b, p : p + n]
        scored[b, p + n + 1 : p + 2 * n] = True
    return x, scored


def llama_like(cfg) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                     num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
                     intermediate_size=cfg.d_ff, max_position_embeddings=cfg.max_seq_len,
                     rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings)
    return LlamaForCausalLM(hf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--alphabet", type=int, default=512)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=80)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--arms", default="unimask,llama")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = model_preset(args.preset, vocab_size=args.vocab, max_seq_len=max(args.length, 128))
    arms = {}
    for name in args.arms.split(","):
        torch.manual_seed(0)
        if name in ("unimask", "unimask_smear"):
            model = Transformer(dataclasses.replace(cfg, smear=name == "unimask_smear"))
            forward = model
        elif name == "llama":
            model = llama_like(cfg)
            forward = lambda x, m=model: m(input_ids=x).logits  # noqa: E731
        else:
            raise SystemExit(f"unknown arm {name!r}: use unimask, unimask_smear or llama")
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
        arms[name] = (forward, opt, {"time": 0.0})
    g = torch.Generator().manual_seed(1)
    print(f"# {args.preset}, vocab {args.vocab}, alphabet {args.alphabet}, batch {args.batch}x{args.length}, "
          f"lr {args.lr}, threads {torch.get_num_threads()}")
    print("step | " + " | ".join(f"{n} loss | {n} copy acc" for n in arms))
    for step in range(1, args.steps + 1):
        x, scored = copy_batch(g, args.batch, args.length, args.alphabet)
        target, mask = x[:, 1:], scored[:, :-1]
        row = []
        for forward, opt, stats in arms.values():
            for group in opt.param_groups:
                group["lr"] = args.lr * min(1.0, step / max(1, args.warmup))
            t0 = time.perf_counter()
            logits = forward(x)[:, :-1]
            loss = F.cross_entropy(logits[mask], target[mask])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            stats["time"] += time.perf_counter() - t0
            acc = float((logits[mask].argmax(-1) == target[mask]).float().mean())
            row.append(f"{float(loss.detach()):.3f} | {acc:.3f}")
        if step % args.every == 0:
            print(f"{step} | " + " | ".join(row), flush=True)
    print("seconds per step: " + ", ".join(f"{n} {s['time'] / args.steps:.3f}" for n, (_, _, s) in arms.items()))


if __name__ == "__main__":
    main()
