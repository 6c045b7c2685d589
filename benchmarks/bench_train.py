"""Trainer throughput vs a plain ``transformers`` + ``torch`` loop on the same model shape and data.

Both arms train the same Llama-shaped model (ours: ``unimask.model.Transformer`` through
``unimask.train``; reference: ``transformers.LlamaForCausalLM`` with a textbook loop: forward
with ``labels``, backward, clip, ``torch.optim.AdamW`` defaults) on identical packed windows of
stdlib code. Each arm runs in its own process (clean peak-memory numbers); the script prints
tokens/s for both, the ratio, and peak memory.

    python benchmarks/bench_train.py [--steps 20] [--warmup 5] [--seq-len 256] [--micro 8] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

MODEL = {"d_model": 256, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4}


@dataclass
class Window:
    tokens: torch.Tensor
    doc_ids: torch.Tensor


class Windows:
    """Cycles over fixed windows; resumable (the trainer's raw-source protocol)."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens, self.i = tokens, 0

    def __iter__(self) -> Windows:
        return self

    def __next__(self) -> Window:
        t = self.tokens[self.i % len(self.tokens)]
        self.i += 1
        return Window(t, torch.zeros_like(t))

    def state_dict(self) -> dict:
        return {"i": self.i}

    def load_state_dict(self, s: dict) -> None:
        self.i = s["i"]


def make_data(work: Path, seq_len: int) -> None:
    from unimask.tokenizer import train_tokenizer

    root = Path(sysconfig.get_paths()["stdlib"])
    texts = [f.read_text(encoding="utf-8") for f in sorted((root / "email").glob("*.py"))]
    tok = train_tokenizer(texts, vocab_size=2048)
    tok.save(work / "tok")
    ids = []
    for t in texts:
        ids += tok.encode(t) + [tok.eos_id]
    n = len(ids) // seq_len
    torch.save(torch.tensor(ids[: n * seq_len]).view(n, seq_len), work / "windows.pt")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(work: Path, args: argparse.Namespace) -> dict:
    from unimask.config import from_dict
    from unimask.tokenizer import Tokenizer
    from unimask.train.config import TrainConfig
    from unimask.train.trainer import Trainer

    tok = Tokenizer.load(work / "tok")
    cfg = from_dict(TrainConfig, {
        "model": {"preset": "tiny", "overrides": {**MODEL, "max_seq_len": args.seq_len}, "compile": args.compile},
        "data": {"seq_len": args.seq_len}, "micro_batch_size": args.micro, "steps": args.warmup + args.steps,
        "eval_interval": 0, "checkpoint_interval": 0, "log_interval": 1, "progress": False, "tensorboard": False,
        "out_dir": str(work / "ours"), "optim": {"warmup_steps": 2}, "resume": False,
    })
    trainer = Trainer(cfg, tokenizer=tok, train_source=Windows(torch.load(work / "windows.pt")))
    trainer.save = lambda: None  # measure training, not the final checkpoint write
    trainer.fit()
    recs = [json.loads(x) for x in (work / "ours" / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in recs if r["kind"] == "train" and r["step"] > args.warmup]
    tokens = len(timed) * args.micro * args.seq_len
    seconds = sum(args.micro * args.seq_len / r["tokens_per_s"] for r in timed)
    n_params = sum(p.numel() for p in trainer.raw_model.parameters())
    return {"tokens_per_s": tokens / seconds, "peak_mb": peak_memory_mb(trainer.device), "params": n_params}


def hf_config(model: torch.nn.Module, seq_len: int):
    from transformers import LlamaConfig

    c = getattr(model, "cfg", None) or model.config
    pick = lambda *names, default=None: next((getattr(c, n) for n in names if hasattr(c, n)), default)  # noqa: E731
    ffn = pick("ffn_hidden", "d_ff", "intermediate_size", "hidden_dim", "mlp_hidden")
    if ffn is None:  # read it off the weights: the largest non-vocab linear dimension
        ffn = max(max(p.shape) for n, p in model.named_parameters() if p.dim() == 2 and c.vocab_size not in p.shape)
    return LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=ffn, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=pick("n_kv_heads", default=c.n_heads),
        max_position_embeddings=seq_len, rms_norm_eps=pick("norm_eps", "eps", default=1e-5),
        rope_theta=pick("rope_theta", "rope_base", default=10000.0),
        tie_word_embeddings=bool(pick("tie_embeddings", "tied_embeddings", "tie_word_embeddings", default=False)),
        attn_implementation="sdpa",
    )


def run_hf(work: Path, args: argparse.Namespace) -> dict:
    from transformers import LlamaForCausalLM

    from unimask.config import from_dict
    from unimask.tokenizer import Tokenizer
    from unimask.train.config import TrainConfig
    from unimask.train.factories import build_model

    tok = Tokenizer.load(work / "tok")
    cfg = from_dict(TrainConfig, {"model": {"preset": "tiny", "overrides": {**MODEL, "max_seq_len": args.seq_len}}})
    ours = build_model(cfg, tok)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = LlamaForCausalLM(hf_config(ours, args.seq_len)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    del ours
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    windows = torch.load(work / "windows.pt")
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    seconds, tokens, i = 0.0, 0, 0
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        idx = [(i + j) % len(windows) for j in range(args.micro)]
        i += args.micro
        x = windows[idx].to(device)
        with amp:
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss)
        if step >= args.warmup:
            seconds += time.perf_counter() - t0
            tokens += x.numel()
    return {"tokens_per_s": tokens / seconds, "peak_mb": peak_memory_mb(device), "params": n_params}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--arm", choices=["ours", "hf"])
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.arm:
        torch.manual_seed(0)
        print(json.dumps((run_ours if args.arm == "ours" else run_hf)(args.work, args)))
        return
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        make_data(work, args.seq_len)
        results = {}
        for arm in ("hf", "ours", "hf", "ours"):  # interleaved twice; best of two on a shared machine
            argv = [sys.executable, __file__, "--arm", arm, "--work", str(work), *sys.argv[1:]]
            out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            if out.returncode != 0:
                raise SystemExit(f"{arm} arm failed:\n{out.stderr[-4000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if arm not in results or r["tokens_per_s"] > results[arm]["tokens_per_s"]:
                results[arm] = r
    h, o = results["hf"], results["ours"]
    print(f"config: {MODEL}, seq_len {args.seq_len}, micro-batch {args.micro}, threads {args.threads}, "
          f"compile {args.compile}, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"params: ours {o['params']:,}  hf {h['params']:,}")
    print(f"transformers loop : {h['tokens_per_s']:10,.0f} tok/s   peak {h['peak_mb']:8.0f} MB")
    print(f"unimask trainer   : {o['tokens_per_s']:10,.0f} tok/s   peak {o['peak_mb']:8.0f} MB")
    print(f"ratio (ours / transformers): {o['tokens_per_s'] / h['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
