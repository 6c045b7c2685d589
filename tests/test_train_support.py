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


# ---------------------------------------------------------------- stand-ins for absent packages
# The trainer codes against ``unimask.model`` (Transformer, presets, save/load_checkpoint) and
# ``unimask.objectives.build_objective``, built concurrently by other engineers. Until those land,
# ``ensure_components()`` installs these minimal test doubles with the same signatures, so the
# trainer's behaviour is tested either way; once the real packages exist they are used instead.


@dataclass
class StandInConfig:
    vocab_size: int = 512
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2
    n_kv_heads: int = 2
    max_seq_len: int = 256


class _Block(torch.nn.Module):
    def __init__(self, c: StandInConfig) -> None:
        super().__init__()
        self.n_heads = c.n_heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(c.d_model), torch.nn.LayerNorm(c.d_model)
        self.qkv = torch.nn.Linear(c.d_model, 3 * c.d_model, bias=False)
        self.proj = torch.nn.Linear(c.d_model, c.d_model, bias=False)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(c.d_model, 4 * c.d_model), torch.nn.GELU(),
                                       torch.nn.Linear(4 * c.d_model, c.d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.norm2(x))


class StandInTransformer(torch.nn.Module):
    """A small pre-LN GPT obeying ``AttentionStructure`` (dense mask, per-token positions)."""

    def __init__(self, config: StandInConfig) -> None:
        super().__init__()
        self.config = config
        self.tok = torch.nn.Embedding(config.vocab_size, config.d_model)
        self.pos = torch.nn.Embedding(config.max_seq_len, config.d_model)
        self.layers = torch.nn.ModuleList([_Block(config) for _ in range(config.n_layers)])
        self.head = torch.nn.Linear(config.d_model, config.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, attention: Any = None, kv_cache: Any = None) -> torch.Tensor:
        B, T = input_ids.shape
        if attention is None:
            pos, mask = torch.arange(T, device=input_ids.device).expand(B, T), None
        else:
            pos, mask = attention.position_ids, attention.dense_mask()
            mask = mask[:, None] if mask.dim() == 3 else mask
        x = self.tok(input_ids) + self.pos(pos)
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(x)

    def set_activation_checkpointing(self, on: bool) -> None:
        self.activation_checkpointing = on


def _standin_save(path: str | Path, model: Any, tokenizer: Any, extra: dict | None = None) -> None:
    from dataclasses import asdict

    from safetensors.torch import save_file

    from unimask.io import atomic_dir

    with atomic_dir(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(asdict(model.config)))
        (tmp / "extra.json").write_text(json.dumps(extra or {}, default=str))
        tokenizer.save(tmp)


def _standin_load(path: str | Path, device: Any = None) -> tuple[Any, Any, dict]:
    from safetensors.torch import load_file

    from unimask.tokenizer import Tokenizer

    path = Path(path)
    model = StandInTransformer(StandInConfig(**json.loads((path / "config.json").read_text())))
    model.load_state_dict(load_file(path / "model.safetensors"))
    return model, Tokenizer.load(path), json.loads((path / "extra.json").read_text())


def _standin_causal(tokenizer: Any, **params: Any):
    from unimask.model.attention import AttentionStructure
    from unimask.objectives.example import IGNORE, TrainingExample

    def objective(raw: Any, rng: Any) -> TrainingExample:
        if hasattr(raw, "tokens"):
            ids, scored = raw.tokens.long(), torch.ones(len(raw.tokens), dtype=torch.bool)
        else:  # a TurnSequence: score action tokens only (agent SFT, AR)
            ids, scored = torch.tensor(raw.token_ids), torch.tensor(raw.is_action)
        labels = torch.full_like(ids, IGNORE)
        labels[:-1] = torch.where(scored[1:], ids[1:], IGNORE)
        weights = (labels != IGNORE).float()
        weights /= weights.sum().clamp(min=1)
        return TrainingExample.from_structure(ids, labels, weights, AttentionStructure.causal(1, len(ids)))

    objective.max_length = lambda n: n
    return objective


def ensure_components() -> None:
    """Install the stand-ins where ``unimask.model`` / ``unimask.objectives`` lack the real API."""
    import types

    import unimask.model as model_pkg
    import unimask.objectives as obj_pkg

    if not hasattr(model_pkg, "Transformer"):
        model_pkg.ModelConfig, model_pkg.Transformer = StandInConfig, StandInTransformer
        model_pkg.save_checkpoint, model_pkg.load_checkpoint = _standin_save, _standin_load
        presets = types.ModuleType("unimask.presets")
        presets.model_preset = lambda name: StandInConfig()
        sys.modules["unimask.presets"] = presets
    if not hasattr(obj_pkg, "build_objective"):
        obj_pkg.build_objective = lambda name, tokenizer, **p: _standin_causal(tokenizer, **p)


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
    ensure_components()
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
    res = trainer_mod.train(cfg, tokenizer=tok, train_source=ListSource(stdlib_windows(tok)))
    if int(os.environ.get("RANK", "0")) == 0:
        (args.out_dir / "losses.json").write_text(json.dumps(res.losses))
    print("DONE", flush=True)


if __name__ == "__main__":
    child_main(sys.argv[1:])
