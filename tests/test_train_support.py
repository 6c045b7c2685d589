"""Shared pieces for the trainer tests (no tests here): tiny data, configs, and a child-process entry.

Run as a script it trains in a child process (used by the SIGKILL tests)::

    python tests/test_train_support.py OUT_DIR STEPS [--sleep-after-save N] [--kill-in-save N] [--set KEY VALUE]
"""

from __future__ import annotations

import json
import os
import signal
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

SEQ_LEN = 32


@dataclass
class Window:
    tokens: torch.Tensor
    doc_ids: torch.Tensor


def stdlib_texts(limit: int = 12) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((root / "json").glob("*.py")) + sorted((root / "email").glob("*.py"))
    return [f.read_text(encoding="utf-8") for f in files[:limit]]


def stdlib_windows(tok: Any, seq_len: int = SEQ_LEN, limit: int = 12) -> list[Window]:
    """Fixed windows of concatenated EOS-separated documents with per-window doc numbering."""
    ids: list[int] = []
    docs: list[int] = []
    for d, text in enumerate(stdlib_texts(limit)):
        piece = tok.encode(text) + [tok.eos_id]
        ids += piece
        docs += [d] * len(piece)
    out = []
    for i in range(0, len(ids) - seq_len, seq_len):
        doc = torch.tensor(docs[i : i + seq_len])
        out.append(Window(torch.tensor(ids[i : i + seq_len]), doc - doc[0]))
    return out


class ListSource:
    """An in-memory, resumable raw source cycling over windows (the trainer's RawSource protocol)."""

    def __init__(self, windows: list[Window]) -> None:
        self.windows, self.i = windows, 0

    def __iter__(self) -> ListSource:
        return self

    def __next__(self) -> Window:
        w = self.windows[self.i % len(self.windows)]
        self.i += 1
        return w

    def state_dict(self) -> dict[str, int]:
        return {"i": self.i}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.i = int(state["i"])


def tiny_config(out_dir: str | Path, **kw: Any):
    from unimask.config import from_dict
    from unimask.train.config import TrainConfig

    data = {
        "out_dir": str(out_dir),
        "model": {"preset": "tiny", "overrides": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2}},
        "data": {"seq_len": SEQ_LEN},
        "steps": 6,
        "micro_batch_size": 2,
        "grad_accum": 2,
        "eval_interval": 0,
        "checkpoint_interval": 2,
        "keep_last_k": 2,
        "log_interval": 1,
        "tensorboard": False,
        "progress": False,
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "dtype": "fp32",  # exactness tests compare fp32 arithmetic; "auto" would pick bf16 on some CPUs
    }
    for key, value in kw.items():
        node = data
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return from_dict(TrainConfig, data)


def tokenizer_for_child(out_dir: Path):
    from unimask.tokenizer import Tokenizer, train_tokenizer

    path = out_dir.parent / "tok" / "tokenizer.json"
    if path.exists():
        return Tokenizer.load(path)
    tok = train_tokenizer(stdlib_texts(), vocab_size=512)
    tok.save(path)
    return tok


def child_main(argv: list[str]) -> None:
    import argparse

    torch.set_num_threads(1)
    from unimask.train import checkpoint as ckpt
    from unimask.train import trainer as trainer_mod

    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("steps", type=int)
    ap.add_argument("--sleep-after-save", type=int, default=-1)
    ap.add_argument("--kill-in-save", type=int, default=-1)
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    args = ap.parse_args(argv)
    tok = tokenizer_for_child(args.out_dir)
    if args.sleep_after_save >= 0:
        original = ckpt.save_training_checkpoint

        def save_then_wait(out, step, *a, **k):
            path = original(out, step, *a, **k)
            if step == args.sleep_after_save:
                print(f"SAVED {step}", flush=True)
                time.sleep(600)  # the parent SIGKILLs us here
            return path

        trainer_mod.ckpt.save_training_checkpoint = save_then_wait
    if args.kill_in_save >= 0:
        original_write = ckpt.write_state

        def write_half_then_die(path, state):
            if state["step"] == args.kill_in_save:
                path.write_bytes(b"partial")  # a torn file inside the temp dir
                os.kill(os.getpid(), signal.SIGKILL)
            original_write(path, state)

        ckpt.write_state = write_half_then_die
    overrides = {k.replace(".", "__"): yaml.safe_load(v) for k, v in args.set}
    cfg = tiny_config(args.out_dir, steps=args.steps, **overrides)
    windows = stdlib_windows(tok)
    res = trainer_mod.train(cfg, tokenizer=tok, train_source=ListSource(windows), val_raws=windows[:4])
    if int(os.environ.get("RANK", "0")) == 0:
        (args.out_dir / "losses.json").write_text(json.dumps(res.losses))
    print("DONE", flush=True)


if __name__ == "__main__":
    child_main(sys.argv[1:])
