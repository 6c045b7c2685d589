"""Decoding speed: AR tokens/s vs transformers ``generate()`` on the same weights, and diffusion
NFE / wall time with threshold parallel decoding vs one token per step.

Usage: python benchmarks/bench_sampling.py [--ckpt DIR]  (default: a random small model)
The diffusion comparison is meaningful on a trained block-diffusion checkpoint (``--dllm``),
e.g. the DLLM fine-tuned by ``unimask compare``; quality is checked as agreement with the
one-token-per-step output.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from unimask.model import Transformer
from unimask.model.hf import export_hf
from unimask.presets import model_preset
from unimask.sampling import ARBackbone, load_backbone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokenizer", default="", help="a tokenizer.json/dir (default: train a small one)")
    ap.add_argument("--dllm", default="", help="a block-diffusion checkpoint for the NFE comparison")
    ap.add_argument("--prompts", default="", help="JSONL with {'turns': ...} to build agent prompts from")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from unimask.tokenizer import Tokenizer, train_tokenizer

    if args.tokenizer:
        tok = Tokenizer.load(args.tokenizer)
    else:
        import sysconfig
        from pathlib import Path

        files = sorted((Path(sysconfig.get_paths()["stdlib"]) / "json").glob("*.py"))
        tok = train_tokenizer([f.read_text() for f in files], vocab_size=1024)
    model = Transformer(model_preset("small", vocab_size=tok.vocab_size)).eval()
    prompts = ["def parse(text):\n    ", "import os\n\nclass Config:\n", "for i in range(", "# utilities\n"]
    prompts = (prompts * args.batch)[: args.batch]
    ours = ARBackbone(model, tok)
    with tempfile.TemporaryDirectory() as d:
        export_hf(model, tok, d + "/hf")
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(d + "/hf").eval()
    ids = [tok.encode(p) for p in prompts]
    T = max(map(len, ids))
    x = torch.full((len(ids), T), tok.pad_id)
    am = torch.zeros_like(x)
    for i, p in enumerate(ids):
        x[i, T - len(p):] = torch.tensor(p)
        am[i, T - len(p):] = 1
    ours.generate(prompts, max_new_tokens=8, stop_token_ids=[])
    with torch.no_grad():
        hf.generate(input_ids=x, attention_mask=am, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_id)
    best = {"unimask": 1e9, "transformers": 1e9}
    for _ in range(3):
        t = time.perf_counter()
        g = ours.generate(prompts, max_new_tokens=args.tokens, stop_token_ids=[])
        best["unimask"] = min(best["unimask"], time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad():
            out = hf.generate(input_ids=x, attention_mask=am, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                              do_sample=False, pad_token_id=tok.pad_id)
        best["transformers"] = min(best["transformers"], time.perf_counter() - t)
    same = sum(out[i, T:].tolist() == g[i].token_ids for i in range(len(ids)))
    n = args.tokens * len(ids)
    print(f"AR decode, small preset, batch {len(ids)}, {args.tokens} new tokens, threads {args.threads}")
    for k, v in best.items():
        print(f"{k:>12}: {n / v:8.0f} tokens/s")
    print(f"ratio unimask/transformers: {best['transformers'] / best['unimask']:.2f}x; "
          f"identical greedy outputs: {same}/{len(ids)}")
    if args.dllm:
        dllm = load_backbone(args.dllm, device="cpu")
        import json

        from unimask.tokenizer.chat import Turn, render_text

        rows = [json.loads(line) for line in open(args.prompts)][:20] if args.prompts else []
        agent_prompts = [render_text([Turn(**t) for t in r["turns"][:2]], add_generation_prompt=True) for r in rows]
        agent_prompts = agent_prompts or prompts
        res = {}
        for label, dec in (("one token/step", {"threshold": None}), ("threshold 0.9", {"threshold": 0.9}),
                           ("threshold 0.7", {"threshold": 0.7})):
            t = time.perf_counter()
            gens = dllm.generate(agent_prompts, max_new_tokens=64, stop=["<|end|>"], **dec)
            res[label] = (time.perf_counter() - t, sum(x.nfe for x in gens), [x.text for x in gens],
                          sum(len(x.token_ids) for x in gens))
        base = res["one token/step"]
        print(f"\nDLLM ({args.dllm}), {len(agent_prompts)} agent prompts, 64-token budget")
        for label, (wall, nfe, texts, ntok) in res.items():
            agree = sum(a == b for a, b in zip(texts, base[2], strict=True))
            print(f"{label:>15}: NFE {nfe:5d} ({base[1] / nfe:.2f}x fewer), wall {wall:6.2f}s "
                  f"({base[0] / wall:.2f}x), tokens/NFE {ntok / nfe:.2f}, outputs identical to 1-token/step "
                  f"{agree}/{len(texts)}")


if __name__ == "__main__":
    main()
