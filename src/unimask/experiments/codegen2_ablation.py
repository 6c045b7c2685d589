"""The CodeGen2 objective ablation, small: causal vs causal+infill 50/50 vs prefix-LM at equal tokens.

Trains one tiny model per ``configs/ablation/*.yaml`` arm on the same stdlib code data and the
same raw-token budget, then scores each on held-out files:

* left-to-right validation loss (the ``causal`` objective on val windows, identical for all arms);
* single-line infill exact match, CodeGen2 format ``prefix <mask_1> suffix <eos> <sep> <mask_1>`` ->
  greedy middle cut at ``<eom>``;
* single-line completion exact match from the prefix alone (what a causal-only model can do).

    python -m unimask.experiments.codegen2_ablation [--out runs/codegen2_ablation] [--tokens 1000000]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unimask.config import load_config
from unimask.data import DataConfig, SourceConfig, TokenizerSettings, prepare_data, read_documents
from unimask.io import atomic_write_text
from unimask.objectives import build_objective
from unimask.tokenizer import Tokenizer
from unimask.tokenizer.formats import CODEGEN2
from unimask.train.config import ObjectiveSpec, TrainConfig
from unimask.train.sources import PackedSource
from unimask.train.trainer import Trainer
from unimask.train.validation import validation_loss

ARMS = ("causal", "causal_infill", "prefix_lm")
CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "ablation"


@dataclass
class InfillTask:
    prefix: list[int]
    middle: list[int]
    suffix: list[int]


def make_infill_tasks(docs: list[list[int]], tokenizer: Any, n: int, seed: int = 0, max_prefix: int = 64,
                      max_suffix: int = 32, max_middle: int = 16) -> list[InfillTask]:
    """Held-out single-line tasks: the middle is the tokens strictly between two newline tokens."""
    rng = np.random.default_rng(seed)
    candidates = []
    for d, ids in enumerate(docs):
        newline = [i for i, t in enumerate(ids) if "\n" in tokenizer.decode([t])]
        for a, b in zip(newline, newline[1:], strict=False):
            if 3 <= b - (a + 1) <= max_middle and a >= 8:
                candidates.append((d, a + 1, b))
    if not candidates:
        raise ValueError("no held-out lines fit the infill task limits; prepare more validation data")
    picks = rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)
    tasks = []
    for k in sorted(picks):
        d, a, b = candidates[k]
        ids = docs[d]
        tasks.append(InfillTask(ids[max(0, a - max_prefix) : a], ids[a:b], ids[b : b + max_suffix]))
    return tasks


@torch.no_grad()
def greedy(model: torch.nn.Module, prompt: list[int], stop: set[int], max_new: int, device: torch.device,
           stop_text: str | None = None, tokenizer: Any = None) -> list[int]:
    """Greedy AR decoding with the model forward (causal attention), up to a stop id or stop text."""
    ids = torch.tensor([prompt], device=device)
    out: list[int] = []
    for _ in range(max_new):
        nxt = int(model(ids)[0, -1].argmax())
        if nxt in stop:
            break
        out.append(nxt)
        if stop_text is not None and stop_text in tokenizer.decode([nxt]):
            break
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
    return out


def infill_exact_match(model: torch.nn.Module, tokenizer: Any, tasks: list[InfillTask], device: torch.device) -> dict:
    """Exact match (decoded text, trailing whitespace ignored) for infill and prefix-only completion."""
    tok = tokenizer
    infill_hits = completion_hits = 0
    for t in tasks:
        want = tok.decode(t.middle).rstrip()
        prompt = CODEGEN2.ids(t.prefix, t.suffix, tok)
        got = greedy(model, prompt, CODEGEN2.stop_ids(tok), len(t.middle) + 8, device)
        infill_hits += tok.decode(got).rstrip() == want
        got = greedy(model, t.prefix, {tok.eos_id}, len(t.middle) + 8, device, stop_text="\n", tokenizer=tok)
        completion_hits += tok.decode(got).split("\n")[0].rstrip() == want
    n = len(tasks)
    return {"infill_em": infill_hits / n, "completion_em": completion_hits / n, "n_tasks": n}


def prepare(out: Path, max_docs: int) -> Path:

    data_dir = out / "data"
    if (data_dir / "meta.json").is_file():
        return data_dir
    cfg = DataConfig(
        sources=[SourceConfig(name="stdlib_code", kind="stdlib_code")],
        tokenizer=TokenizerSettings(vocab_size=2048),
        out_dir=str(data_dir), max_docs=max_docs, val_fraction=0.05, workers=0,
    )
    return prepare_data(cfg, progress=False)


def with_copying(cfg: TrainConfig, weight: float) -> TrainConfig:
    """The arm on the comparison's base recipe: a share ``weight`` of its windows repeat corpus spans
    (``copy``, scored on the repeats, half of them quoted as the comparison's are), the rest its own
    objectives, and ``smear`` in the model."""
    if weight <= 0:
        return cfg
    specs = [ObjectiveSpec(o.name, o.weight * (1 - weight), o.params) for o in cfg.objectives]
    copy = ObjectiveSpec("copy", weight, {"repeats": 2, "min_span": 4, "max_span": 24, "lm_weight": 0.0,
                                          "marked": 0.5})
    cfg.objectives = [*specs, copy]
    cfg.model.overrides = {**cfg.model.overrides, "smear": True}
    return cfg


def run_arm(arm: str, out: Path, data_dir: Path, tokens: int, tasks: list[InfillTask], val_raws: list[Any],
            seed: int, copy_weight: float = 0.0) -> dict[str, Any]:
    cfg = with_copying(load_config(TrainConfig, CONFIG_DIR / f"{arm}.yaml", {
        "data.dir": str(data_dir), "out_dir": str(out / arm), "token_budget": str(tokens), "seed": str(seed),
        "resume": "false", "progress": "false", "tensorboard": "false",
    }), copy_weight)
    trainer = Trainer(cfg)
    t0 = time.perf_counter()
    res = trainer.fit()
    seconds = time.perf_counter() - t0
    if res.interrupted:
        raise SystemExit(f"arm {arm} was interrupted at step {res.step}; the table would not be at equal tokens")
    model = trainer.raw_model.eval()
    device = trainer.device
    tok = trainer.tokenizer
    l2r = validation_loss(model, val_raws, {"causal": build_objective("causal", tok)}, tok.pad_id, device, 16)
    em = infill_exact_match(model, tok, tasks, device)
    n_params = sum(p.numel() for p in model.parameters())
    return {"arm": arm, "tokens": res.tokens, "steps": res.step, "train_seconds": round(seconds, 1),
            "params": n_params, "checkpoint": str(res.checkpoint),
            "val_l2r_loss": l2r["causal"], **em}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| arm | params | raw tokens | steps | L2R val loss | infill EM | prefix-only EM | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['params']:,} | {r['tokens']:,} | {r['steps']} | "
                     f"{r['val_l2r_loss']:.4f} | {r['infill_em']:.3f} | {r['completion_em']:.3f} | {r['train_seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/codegen2_ablation"))
    ap.add_argument("--tokens", type=int, default=1_000_000, help="raw training tokens per arm")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--max-docs", type=int, default=400, help="stdlib files to prepare")
    ap.add_argument("--tasks", type=int, default=100, help="held-out infill tasks")
    ap.add_argument("--val-windows", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--copy-weight", type=float, default=0.5,
                    help="share of every arm's windows that repeat corpus spans, with smear (the compare "
                         "recipe's copy signal); 0: the arms alone")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = prepare(args.out, args.max_docs)
    tok = Tokenizer.load(data_dir)
    tasks = make_infill_tasks(list(read_documents(data_dir, "val")), tok, args.tasks, args.seed)
    val_raws = []
    for w in PackedSource(data_dir, "val", 128, epochs=1):
        val_raws.append(w)
        if len(val_raws) >= args.val_windows:
            break
    rows = [run_arm(arm, args.out, data_dir, args.tokens, tasks, val_raws, args.seed, args.copy_weight)
            for arm in args.arms]
    table = markdown_table(rows)
    atomic_write_text(args.out / "results.json", json.dumps(rows, indent=2))
    atomic_write_text(args.out / "results.md", table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
