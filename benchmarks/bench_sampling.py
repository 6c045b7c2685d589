"""AR decoding speed: unimask tokens/s vs transformers ``generate()`` on the same weights.

Usage: python benchmarks/bench_sampling.py [--tokens N --batch B --threads T]
(diffusion decoding: benchmarks/bench_diffusion_decoding.py)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from unimask.model import Transformer
from unimask.model.hf import export_hf
from unimask.presets import model_preset
from unimask.sampling import ARBackbone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokenizer", default="", help="a tokenizer.json/dir (default: train a small one)")
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


if __name__ == "__main__":
    main()
