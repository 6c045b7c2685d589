"""The matched AR-vs-DLLM agent comparison (the DLLM Agent experiment, in miniature).

Stages, each skipped when its output already exists (so an interrupted run resumes):

1. prepare the corpus (stdlib code + docs) and tokenizer;
2. pre-train one AR base on causal LM mixed with repeated corpus spans (``copy``), so that it
   learns to copy (induction) -- the skill every tool call needs;
3. adapt that same base to context-causal block diffusion by continued training (as Dream and
   DiffuLLaMA do, and as the DLLM Agent paper's diffusion backbone was continued from its AR
   model), again with noised repeats (``copy_diffusion``); ``dllm_from_ar=False`` pre-trains the
   DLLM from scratch instead, for the same steps as the AR base. Given checkpoints skip both;
4. build DocQA and write oracle trajectories (train/val) through the real tools, each train
   trajectory also with its names made up (``name_swaps``), so SFT rewards copying over recall;
5. fine-tune both on the *same* trajectories with the multi-turn SFT objective: AR causal on
   actions; DLLM with aligned masks; plus the unaligned-mask DLLM ablation;
6. run every agent on the same test tasks (the whole split by default) with the same tools,
   round cap and budgets, and the DLLM under several decoding settings;
7. write ``report.md`` and ``summary.json`` with tables, CIs, plots, the induction metric of each
   base and the raw episode logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unimask.agent.loop import LoopConfig, run_paired_episodes
from unimask.config import from_dict
from unimask.data import DataConfig, prepare_data
from unimask.envs.docqa import (
    DocQAEnvironment,
    name_pieces,
    oracle_trajectories,
    shuffle_hits,
    swap_names,
    trivial_baseline,
)
from unimask.evals.induction import copy_probes, induction_hook
from unimask.experiments.report import write_report
from unimask.experiments.stages import Stage, in_worker, run_stages
from unimask.io import atomic_dir, atomic_write_text
from unimask.model import load_checkpoint, read_checkpoint_meta
from unimask.model.convert import ensure_checkpoint
from unimask.objectives import build_objective, max_input_length
from unimask.objectives.copy import Marks
from unimask.presets import model_preset
from unimask.sampling import load_backbone
from unimask.tokenizer import Tokenizer
from unimask.train import TrainConfig
from unimask.train.trainer import EvalHook, train

log = logging.getLogger(__name__)


@dataclass
class CompareConfig:
    out_dir: str = "runs/compare"
    seed: int = 0
    # corpus and models
    max_docs: int = 300  # per corpus source
    vocab_size: int = 1024  # a small vocabulary: cheaper steps, and copying forms sooner (BENCHMARKS.md)
    model_preset: str = "small"
    # smear: a projected previous-token embedding, which makes copying a one-layer circuit
    model_overrides: dict[str, Any] = field(default_factory=lambda: {"max_seq_len": 1024, "smear": True})
    # start from these instead of pre-training: unimask checkpoints or Hugging Face directories
    # (converted on load, see ``unimask convert``); the corpus is then tokenized with their tokenizer
    ar_init: str = ""
    dllm_init: str = ""
    pretrain_steps: int = 900
    pretrain_seq_len: int = 256
    pretrain_batch: int = 16
    copy_weight: float = 0.8  # share of AR pre-training examples that repeat corpus spans
    adapt_copy_weight: float = 0.3  # the same share during AR-to-diffusion adaptation
    copy_repeats: int = 4  # repeated spans per copy example (one per equal chunk of the window)
    # share of repeats quoted (`span` ... "span"): the copy's first token is scored, as a tool call
    # must find where a name starts (objectives/copy.py)
    copy_marked: float = 0.5
    dllm_from_ar: bool = True  # the DLLM is the AR base adapted to diffusion (False: its own pre-training)
    adapt_steps: int = 200  # AR-to-diffusion adaptation steps (dllm_from_ar)
    adapt_lr: float = 3e-4  # gentle: 1e-3 erased the base's induction (loss drop 0.27 -> 0.04)
    block_size: int = 8
    # Dream's convention for AR-adapted DLLMs: position i predicts token i+1, so the AR base's
    # next-token circuits (induction) carry over to diffusion decoding (with sft_ar_weight, the
    # DLLM agent copies names: docs/compare.md)
    dllm_shift: bool = True
    induction_probes: int = 64  # held-out repeated spans scored for every base
    # agent data and fine-tuning
    task_types: list[str] = field(default_factory=lambda: ["module", "default"])
    recovery_rate: float = 0.1
    train_trajectories: int = 2000
    name_swaps: int = 1  # made-up-name copies of every train trajectory
    shuffle_hits: bool = True  # ... with their search results in a drawn order (match the name, not the line)
    sft_steps: int = 500
    sft_batch: int = 8
    sft_lr: float = 2e-3
    sft_context_weight: float = 0.0  # LM loss on context tokens for every arm (agent_sft context_weight)
    # next-token loss on the clean actions of the aligned DLLM's layout (agent_sft_diffusion ar_weight)
    # (2.0 over 1.0: 37.5% vs 33.8% EM on an 80-task probe, within its noise; docs/compare.md)
    sft_ar_weight: float = 2.0
    pretrain_lr: float = 2e-3  # 1e-3 left the induction phase unfinished at 900 steps (copy acc 33% vs 65%)
    ablation_sft_steps: int = 300  # 0 = same as sft_steps
    # evaluation
    test_tasks: int = 0  # 0 = the whole test split
    ablation_tasks: int = 60  # the unaligned ablation's share of them (spread over the split; 0 = all)
    settings_tasks: int = 10  # tasks for the decoding-settings sweep
    max_rounds: int = 15
    max_new_tokens: int = 64
    max_context_tokens: int = 512
    # Fast-dLLM's confidence threshold, chosen on the val split (217 tasks, this recipe's DLLM,
    # 2026-12-07): EM 22.6 / 36.9 / 37.8 / 41.5% at 0.3 / 0.5 / 0.7 / 0.9 (AR 41.0%); docs/compare.md
    threshold: float = 0.9
    constrained: bool = True  # schema-constrained tool calls for every agent (the sweep turns it off)
    # write what the schema forces (JSON punctuation, key names, a tool name or doc id once its prefix
    # is unique) without a forward pass, for both arms: the same EM at half the AR agent's passes
    # on the probe (docs/compare.md); the sweep turns it off
    forced_tokens: bool = True
    device: str = "auto"
    # Training precision (TrainConfig.dtype). fp32 by default so that the run, and the figures in the
    # docs, reproduce on any CPU: "auto" trains in bf16 autocast where the CPU multiplies bf16 natively
    # (1.16x faster pre-training here), which changes the run (2026-12-08: AR 53.0%, DLLM 46.7% EM
    # against fp32's 50.1% / 52.7%). The GPU config sets auto.
    dtype: str = "fp32"
    # Decoding tiny models on CPU is latency-bound: one intra-op thread avoids OpenMP stalls on a
    # busy machine (measured 100x slower with 2 threads under load) and treats both backbones alike.
    eval_threads: int = 1
    # stages that run at once, each in its own process (a training stage beside another gets one
    # thread; 1: every stage in order, in this process)
    workers: int = 2

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.test_tasks < 0 or self.settings_tasks < 0:
            raise ValueError("test_tasks (0 = whole split) and settings_tasks must be >= 0")
        for name in ("copy_weight", "adapt_copy_weight", "copy_marked"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def model_settings(self) -> dict[str, Any]:
        """The preset's overrides both arms train with (the vocabulary is the prepared tokenizer's)."""
        return {"vocab_size": self.vocab_size, **self.model_overrides}

    def dllm_params(self, **params: Any) -> dict[str, Any]:
        """Parameters every DLLM objective shares (adaptation and SFT), so they imply one decoder."""
        return {"block_size": self.block_size, "shift": self.dllm_shift, **params}

    def base_objectives(self, paradigm: str) -> list[dict[str, Any]]:
        """The pre-training (``"ar"``) or adaptation (``"dllm"``) mixture: LM plus repeated spans."""
        chunk = self.pretrain_seq_len // self.copy_repeats
        copy = {"repeats": self.copy_repeats, "min_span": 4, "max_span": max(4, min(24, (chunk - 8) // 2)),
                "marked": self.copy_marked}
        if paradigm == "ar":  # LM comes from the causal examples; copy examples score the copies alone
            lm, rep = {"name": "causal"}, {"name": "copy", "params": {**copy, "lm_weight": 0.0}}
        else:
            lm = {"name": "block_diffusion", "params": self.dllm_params(clean_attention="causal", ar_weight=0.5)}
            rep = {"name": "copy_diffusion", "params": self.dllm_params(**copy)}
        w = self.copy_weight if paradigm == "ar" else self.adapt_copy_weight
        return [{**lm, "weight": 1 - w}, {**rep, "weight": w}]


def _must_run(name: str, marker: Path) -> bool:
    """True if the stage must run (the scheduler logs its start); logs what is reused."""
    if marker.exists():
        log.info("✓ %s: reusing %s", name, marker)
        return False
    return True


def _train(cfg: CompareConfig, out: Path, objectives: list[dict[str, Any]], *, data: dict[str, Any],
           steps: int, batch: int, lr: float, init_from: str = "", eval_hooks: Sequence[EvalHook] = (),
           evals: int = 1) -> Path:
    """One training stage; its last checkpoint becomes ``out/final`` (atomically)."""

    tc = from_dict(TrainConfig, {
        "model": {"preset": cfg.model_preset, "overrides": cfg.model_settings()},
        "data": data,
        "objectives": objectives,
        "optim": {"lr": lr, "min_lr": lr / 10, "warmup_steps": max(1, steps // 20), "weight_decay": 0.0},
        "micro_batch_size": batch,
        "steps": steps,
        "eval_interval": 0 if steps < 1 else max(1, steps // evals),
        "eval_batches": 2,
        "checkpoint_interval": steps,
        "keep_last_k": 1,
        "log_interval": max(1, steps // 10),
        "out_dir": str(out),
        "init_from": init_from,
        "seed": cfg.seed,
        "device": cfg.device,
        "dtype": cfg.dtype,
        "tensorboard": False,
        "progress": not in_worker(),  # bars from two processes would garble each other; workers log
    })
    result = train(tc, eval_hooks=eval_hooks)
    if result.interrupted:  # SIGTERM/Ctrl-C: a partial run must not become a stage's "final" model
        log.warning("interrupted; %s is checkpointed: rerun the same command to resume", out)
        raise SystemExit(130)
    if result.checkpoint is None:
        raise RuntimeError(f"training in {out} produced no checkpoint")
    final = out / "final"
    with atomic_dir(final) as tmp:  # a crash mid-copy must not leave a "final" that reruns reuse
        shutil.copytree(result.checkpoint, tmp, dirs_exist_ok=True)
    return final


def spread(items: list[Any], n: int) -> list[Any]:
    """``n`` items evenly spread over ``items`` (in order). Task lists are ordered by question type,
    so a prefix would skew the type mix."""
    if n >= len(items):
        return list(items)
    return [items[round(j * (len(items) - 1) / max(1, n - 1))] for j in range(n)] if n > 1 else items[:n]


class _StageTimes:
    """Wall time of each stage when it actually ran, kept in ``timings.json`` so that a resumed run
    reports what every stage cost rather than the near-zero time of reusing it."""

    def __init__(self, path: Path):
        self.path = path
        self.times: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def record(self, stage: str, started: float) -> None:
        self.set(stage, time.perf_counter() - started)

    def set(self, stage: str, seconds: float) -> None:
        self.times[stage] = seconds
        atomic_write_text(self.path, json.dumps(self.times, indent=2))

    def add_wall(self, seconds: float) -> None:
        """The run's own wall time (stages overlap, so it is less than their sum); resumes add up."""
        self.set("wall", self.times.get("wall", 0.0) + seconds)

    def summary(self) -> dict[str, float]:
        """Stages (agent runs summed into one entry), their sum and the run's wall time."""
        agents = sum(v for k, v in self.times.items() if k.startswith("agents: "))
        out = {k: v for k, v in self.times.items() if not k.startswith("agents: ") and k != "wall"}
        wall = {"wall": self.times["wall"]} if "wall" in self.times else {}
        return {**out, "agent runs": agents, "total": sum(out.values()) + agents, **wall}


def _check_same_config(path: Path, cfg: CompareConfig) -> None:
    """Stages are reused by existence, so a rerun must not silently mix results of two configs."""
    new = asdict(cfg)
    if path.exists():
        old = json.loads(path.read_text())
        changed = sorted(k for k in set(old) | set(new) if k != "out_dir" and old.get(k) != new.get(k))
        if changed:
            raise SystemExit(
                f"{path.parent} holds a comparison run with a different config ({', '.join(changed)} changed) and "
                "would reuse its stages; use a fresh --out_dir, or delete its compare_config.json together with "
                "the stages the change affects (e.g. episodes/ for evaluation settings)"
            )
    atomic_write_text(path, json.dumps(new, indent=2))


def _resolve_inits(cfg: CompareConfig) -> tuple[dict[str, Path], CompareConfig]:
    """Given starting points as unimask checkpoints (HF directories are converted, cached), and the
    config with ``dllm_shift`` taken from a given DLLM: a Dream model predicts token i+1 at
    position i, and fine-tuning or decoding it the other way would be silently wrong."""
    inits = {name: ensure_checkpoint(p) for name, p in (("ar", cfg.ar_init), ("dllm", cfg.dllm_init)) if p}
    if "dllm" in inits:
        extra = read_checkpoint_meta(inits["dllm"]).get("extra", {})
        if extra.get("backbone", "ar") == "ar":
            raise ValueError(f"dllm_init {cfg.dllm_init} is an AR model (backbone 'ar'); give a diffusion model "
                             "(LLaDA, Dream or a unimask DLLM), or leave dllm_init empty to adapt the AR base")
        shift = bool(extra.get("shift", False))
        if shift != cfg.dllm_shift:
            log.warning("dllm_init is %s diffusion model: dllm_shift=%s for its fine-tuning and decoding",
                        "a shifted" if shift else "an unshifted", shift)
            cfg = dataclasses.replace(cfg, dllm_shift=shift)
    if "ar" in inits and read_checkpoint_meta(inits["ar"]).get("extra", {}).get("backbone", "ar") != "ar":
        raise ValueError(f"ar_init {cfg.ar_init} is a diffusion model; give an autoregressive one")
    return inits, cfg


def _check_same_text_ids(tokenizers: dict[str, Any], text: str = "def f(x):\n    return x.split(', ')\n") -> None:
    """Both arms must read the same text as the same ids (one vocabulary, as Qwen2.5 and Dream share)."""
    ids = {name: tok.encode(text) for name, tok in tokenizers.items()}
    if ids["ar"] != ids["dllm"]:
        raise ValueError("ar_init and dllm_init tokenize text differently; a matched comparison needs one "
                         "vocabulary (e.g. Qwen2.5 and Dream, which was initialised from it)")


def _induction_hooks(cfg: CompareConfig, data_dir: Path, paradigm: str, tokenizer: Path) -> list[EvalHook]:
    """The induction metric of a base: held-out repeated spans, decoded as its agent will decode."""
    probes = copy_probes(data_dir, cfg.pretrain_seq_len, n=cfg.induction_probes, seed=cfg.seed + 1234)
    tok = Tokenizer.load(tokenizer)
    quoted = copy_probes(data_dir, cfg.pretrain_seq_len, n=cfg.induction_probes // 2, seed=cfg.seed + 4321,
                         marks=Marks.from_tokenizer(tok))
    decoding = {"block_length": cfg.block_size, "threshold": cfg.threshold, "shift": cfg.dllm_shift}
    return [induction_hook(probes, decoding if paradigm == "dllm" else None, tok, quoted)]


def _base_stage(cfg: CompareConfig, out: Path, name: str, data_dir: Path, tokenizer: Path, init_from: str) -> None:
    """Pre-train the AR base, or adapt it (``init_from``) to block diffusion; or pre-train the DLLM."""
    packed = {"kind": "packed", "dir": str(data_dir), "seq_len": cfg.pretrain_seq_len}
    _train(cfg, out, cfg.base_objectives(name), data=packed, steps=cfg.adapt_steps if init_from else cfg.pretrain_steps,
           batch=cfg.pretrain_batch, lr=cfg.adapt_lr if init_from else cfg.pretrain_lr, init_from=init_from,
           # adaptation is on the run's critical path and each diffusion-decoded probe costs ~12 s
           eval_hooks=_induction_hooks(cfg, data_dir, name, tokenizer), evals=2 if init_from else 4)


def _induction_stage(cfg: CompareConfig, path: Path, data_dir: Path, bases: dict[str, Path],
                     tokenizers: dict[str, Path]) -> None:
    """The induction metric of every base, once per run (``induction.json``)."""
    found = {}
    for name, ckpt in bases.items():
        model, _, _ = load_checkpoint(ckpt)
        hooks = _induction_hooks(cfg, data_dir, name, tokenizers[name])
        found[name] = {k.removeprefix("induction/"): v for hook in hooks for k, v in hook(model).items()}
    atomic_write_text(path, json.dumps(found, indent=2))


def environment(cfg: CompareConfig, out: Path) -> DocQAEnvironment:
    """The run's DocQA environment (its corpus and search index cached under ``out/cache``)."""
    return DocQAEnvironment(out / "cache", task_types=cfg.task_types, seed=cfg.seed)


def agent_tasks(cfg: CompareConfig, env: DocQAEnvironment) -> tuple[list[Any], LoopConfig]:
    """The main agents' test tasks and loop settings (also what benchmarks replay on a run's checkpoints)."""
    tasks = spread(env.tasks("test"), cfg.test_tasks or len(env.tasks("test")))
    return tasks, LoopConfig(max_rounds=cfg.max_rounds, max_new_tokens=cfg.max_new_tokens,
                             max_context_tokens=cfg.max_context_tokens, batch_size=1, constrained=cfg.constrained)


def _trajectory_stage(cfg: CompareConfig, out: Path, data_dir: Path) -> None:
    """Oracle trajectories through the real tools; every correct train one also with made-up names."""
    env, tokenizer = environment(cfg, out), Tokenizer.load(data_dir)
    traj_dir = out / "trajectories"
    traj_dir.mkdir(exist_ok=True)
    pool, rng = name_pieces(env), np.random.default_rng(cfg.seed)
    for split, limit in (("train", cfg.train_trajectories), ("val", 100)):
        recs = oracle_trajectories(env, split, tokenizer, cfg.recovery_rate, cfg.seed, limit)
        good = [r for r in recs if r["em"] == 1.0]
        log.info("%s: %d/%d oracle episodes correct", split, len(good), len(recs))
        if split == "train":
            swapped = [swap_names(r, pool, rng) for _ in range(cfg.name_swaps) for r in good]
            good += [shuffle_hits(r, rng) for r in swapped] if cfg.shuffle_hits else swapped
        atomic_write_text(traj_dir / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in good))


def _sft_data(cfg: CompareConfig, out: Path, data_dir: Path, seq: int) -> dict[str, Any]:
    """The trajectory data settings every arm fine-tunes with (one max length for all)."""
    tokenizer, traj_dir = Tokenizer.load(data_dir), out / "trajectories"
    lens = [len(tokenizer.encode("".join(tt["content"] for tt in json.loads(line)["turns"]))) + 12
            for line in (traj_dir / "train.jsonl").read_text().splitlines()[:200]]
    ctx = {"context_weight": cfg.sft_context_weight}
    # the aligned DLLM example (clean + noised copy + padded blocks) is the longest of the arms'
    fit = max_input_length(build_objective("agent_sft_diffusion", tokenizer, **cfg.dllm_params(**ctx)), seq)
    if max(lens) > fit:
        log.warning("trajectories of up to %d tokens are cut to %d to fit the aligned DLLM objective in max_seq_len "
                    "%d; raise model_overrides.max_seq_len to keep them whole", max(lens), fit, seq)
    return {"kind": "trajectories", "train_path": str(traj_dir / "train.jsonl"),
            "val_path": str(traj_dir / "val.jsonl"), "max_len": min(max(lens) + 32, fit), "tokenizer": str(data_dir)}


def _sft_stage(cfg: CompareConfig, out: Path, run_dir: Path, objectives: list[dict[str, Any]], init: Path,
               steps: int, data_dir: Path, seq: int) -> None:
    _train(cfg, run_dir, objectives, data=_sft_data(cfg, out, data_dir, seq), steps=steps, batch=cfg.sft_batch,
           lr=cfg.sft_lr, init_from=str(init))


def _agent_stage(cfg: CompareConfig, out: Path, arms: dict[str, tuple[Path, Path, dict[str, Any]]],
                 tasks: list[Any], loop: LoopConfig) -> None:
    """Agents (label -> episode log, checkpoint, decoding) on the same tasks, interleaved task by
    task in this process, so that their wall times are comparable; each log is written whole or
    not at all."""
    device = None if cfg.device == "auto" else cfg.device
    backbones = {label: load_backbone(ckpt, device=device, **{"forced_tokens": cfg.forced_tokens, **decoding})
                 for label, (_, ckpt, decoding) in arms.items()}
    tmps = {label: path.with_suffix(".partial") for label, (path, *_) in arms.items()}
    for tmp in tmps.values():
        tmp.unlink(missing_ok=True)
    run_paired_episodes(environment(cfg, out), tasks, backbones, loop, tmps, progress=not in_worker())
    for label, (path, *_) in arms.items():
        tmps[label].replace(path)


def _complete(path: Path, n: int) -> bool:
    """True if the episode log ``path`` holds all ``n`` episodes (a stage to reuse)."""
    return path.exists() and len(path.read_text().splitlines()) == n


def _merge_shards(shards: list[Path], path: Path) -> None:
    """Episode logs of ``tasks[k::K]`` (k = 0..K-1) back into one log in task order."""
    parts = [p.read_text().splitlines() for p in shards]
    lines = [parts[i % len(parts)][i // len(parts)] for i in range(sum(map(len, parts)))]
    atomic_write_text(path, "".join(x + "\n" for x in lines))
    for p in shards:
        p.unlink()


def run_compare(cfg: CompareConfig) -> Path:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inits, cfg = _resolve_inits(cfg)
    _check_same_config(out / "compare_config.json", cfg)
    times = _StageTimes(out / "timings.json")
    started = time.perf_counter()

    # 1. corpus + tokenizer (here, before anything can run beside it)
    data_dir = out / "data"
    if _must_run("prepare corpus and tokenizer", data_dir / "meta.json"):
        log.info("▶ prepare corpus and tokenizer")
        given_tok = inits.get("ar") or inits.get("dllm")  # a given model brings its tokenizer
        tok_settings = {"path": str(given_tok)} if given_tok else {"vocab_size": cfg.vocab_size}
        dc = from_dict(DataConfig, {"out_dir": str(data_dir), "max_docs": cfg.max_docs, "seed": cfg.seed,
                                    "tokenizer": tok_settings})
        prepare_data(dc)
        times.record("prepare", started)
    # each arm speaks its own model's tokenizer (Dream's mask id differs from the AR model's added one)
    arm_tok = {name: inits.get(name) or data_dir for name in ("ar", "dllm")}
    _check_same_text_ids({name: Tokenizer.load(path) for name, path in arm_tok.items()})
    env = environment(cfg, out)  # built (and its search index cached) once, before the stages read it

    # Every later stage, in priority order; a stage whose output exists is reused. Stages beside
    # another get one thread each; the AR base, which nothing can run beside, all of them.
    lane = 1 if cfg.workers > 1 else 0
    stages: list[Stage] = []

    def add(stage: str, marker: Path, title: str, fn: Any, needs: tuple[str, ...] = (), threads: int = lane,
            **kwargs: Any) -> None:
        if _must_run(title, marker):
            stages.append(Stage(stage, fn, {"cfg": cfg, **kwargs}, needs, threads, title))

    adapt = cfg.dllm_from_ar and not cfg.dllm_init
    pre: dict[str, Path] = {}
    for name in ("ar", "dllm"):
        if name in inits:
            pre[name] = inits[name]
            continue
        from_ar = name == "dllm" and adapt
        steps = cfg.adapt_steps if from_ar else cfg.pretrain_steps
        what = (f"adapt the AR base to block diffusion ({steps} steps)" if from_ar else
                f"pre-train {name.upper()} ({steps} steps x {cfg.pretrain_batch} x {cfg.pretrain_seq_len} tokens)")
        pre[name] = out / f"pretrain_{name}" / "final"
        add(f"pretrain_{name}", pre[name] / "config.json", what, _base_stage,
            needs=("pretrain_ar",) if from_ar else (), threads=0 if name == "ar" else lane,
            out=out / f"pretrain_{name}", name=name, data_dir=data_dir, tokenizer=arm_tok[name],
            init_from=str(pre["ar"]) if from_ar else "")
    add("trajectories", out / "trajectories" / "val.jsonl", "oracle trajectories through the real tools",
        _trajectory_stage, out=out, data_dir=data_dir)
    recipe = ("given checkpoints" if cfg.ar_init and cfg.dllm_init else
              "DLLM adapted from the AR base" if adapt else "AR and DLLM pre-trained separately")

    # matched fine-tuning on the same trajectories
    seq = model_preset(cfg.model_preset, **cfg.model_settings()).max_seq_len
    if inits:  # given models keep their own context length
        seq = min(int(read_checkpoint_meta(p)["model"]["max_seq_len"]) for p in inits.values())
    ctx = {"context_weight": cfg.sft_context_weight}
    arms = {  # in priority order: the DLLM's chain is the longest
        "DLLM": ([{"name": "agent_sft_diffusion", "params": cfg.dllm_params(ar_weight=cfg.sft_ar_weight, **ctx)}],
                 pre["dllm"], cfg.sft_steps),
        "AR": ([{"name": "agent_sft_ar", "params": ctx}], pre["ar"], cfg.sft_steps),
        "DLLM unaligned": ([{"name": "agent_sft_diffusion", "params": cfg.dllm_params(aligned=False, **ctx)}],
                           pre["dllm"], cfg.ablation_sft_steps or cfg.sft_steps),
    }
    sft = {}
    for arm, (objective, init, steps) in arms.items():
        run_dir = out / ("sft_" + arm.lower().replace(" ", "_"))
        sft[arm] = run_dir / "final"
        base = "pretrain_ar" if arm == "AR" else "pretrain_dllm"
        add(f"sft_{arm}", sft[arm] / "config.json", f"fine-tune {arm} on the oracle trajectories ({steps} steps)",
            _sft_stage, needs=(base, "trajectories"), out=out, run_dir=run_dir, objectives=objective, init=init,
            steps=steps, data_dir=data_dir, seq=seq)
    add("induction", out / "induction.json", "induction metric of both bases", _induction_stage,
        needs=("pretrain_ar", "pretrain_dllm"), path=out / "induction.json", data_dir=data_dir, bases=pre,
        tokenizers=arm_tok)

    # agents on the same test tasks
    tasks, loop = agent_tasks(cfg, env)
    free = dataclasses.replace(loop, constrained=not cfg.constrained)
    free_label = "unconstrained" if cfg.constrained else "constrained"
    dllm_default = {"threshold": cfg.threshold}
    sweep = spread(tasks, cfg.settings_tasks)
    runs: list[tuple[str, str, dict[str, Any], list[Any], LoopConfig]] = [
        ("DLLM", "DLLM", dllm_default, tasks, loop),
        ("AR", "AR", {}, tasks, loop),
        ("DLLM unaligned", "DLLM unaligned", dllm_default, spread(tasks, cfg.ablation_tasks or len(tasks)), loop),
        ("AR (sweep subset)", "AR", {}, sweep, loop),
        (f"AR {free_label}", "AR", {}, sweep, free),
        ("DLLM (sweep subset)", "DLLM", dllm_default, sweep, loop),
        (f"DLLM {free_label}", "DLLM", dllm_default, sweep, free),
        ("DLLM one token/step", "DLLM", {"threshold": None, "steps": None}, sweep, loop),
        (f"AR forced tokens {'off' if cfg.forced_tokens else 'on'}", "AR", {"forced_tokens": not cfg.forced_tokens},
         sweep, loop),
        (f"DLLM forced tokens {'off' if cfg.forced_tokens else 'on'}", "DLLM",
         {**dllm_default, "forced_tokens": not cfg.forced_tokens}, sweep, loop),
        *((f"DLLM threshold {th}", "DLLM", {"threshold": th}, sweep, loop) for th in (0.3, 0.5, 0.7, 0.9)
          if th != cfg.threshold),
        # the unaligned (bidirectional) DLLM decodes with the dual approximate cache; the cache study
        # (none/prefix/dual) is benchmarks/bench_diffusion_decoding.py, kept out of the timed job
        ("DLLM unaligned (sweep subset)", "DLLM unaligned", dllm_default, sweep, loop),
    ]
    ep_dir = out / "episodes"
    ep_dir.mkdir(exist_ok=True)
    paths = {label: ep_dir / (label.lower().replace(" ", "_").replace("/", "").replace(".", "") + ".jsonl")
             for label, *_ in runs}
    done = {label for label, _, _, arm_tasks, _ in runs if _complete(paths[label], len(arm_tasks))}
    for label in sorted(done):
        log.info("✓ agent run %s: reusing %s", label, paths[label])
    # The main arms run interleaved task by task, in one shard of the tasks per worker: every arm
    # then shares the machine with the same load, and the end-to-end speed-up is a fair ratio.
    main = {label: (arm, decoding) for label, arm, decoding, _, _ in runs if label in ("DLLM", "AR") and label not in done}
    shards = max(1, cfg.workers) if main else 0
    shard_paths = {label: [paths[label].with_suffix(f".shard{k}of{shards}.jsonl") for k in range(shards)]
                   for label in main}
    for k in range(shards):
        arms = {label: (shard_paths[label][k], sft[arm], decoding) for label, (arm, decoding) in main.items()}
        if all(_complete(p, len(tasks[k::shards])) for p, *_ in arms.values()):
            log.info("✓ agent runs %s, shard %d/%d: reusing", " + ".join(main), k + 1, shards)
            continue
        stages.append(Stage(f"agents: {' + '.join(main)} ({k + 1}/{shards})", _agent_stage,
                            {"cfg": cfg, "out": out, "arms": arms, "tasks": tasks[k::shards], "loop": loop},
                            tuple(f"sft_{arm}" for arm, _ in main.values()), cfg.eval_threads,
                            f"agent runs, interleaved: {' + '.join(main)} on test tasks {k}::{shards}"))
    for label, arm, decoding, arm_tasks, lp in runs:
        if label not in done and label not in main:
            stages.append(Stage(f"agents: {label}", _agent_stage,
                                {"cfg": cfg, "out": out, "arms": {label: (paths[label], sft[arm], decoding)},
                                 "tasks": arm_tasks, "loop": lp},
                                (f"sft_{arm}",), cfg.eval_threads, f"agent run: {label} on {len(arm_tasks)} test tasks"))

    run_stages(stages, cfg.workers, times.set, log)
    for label, parts in shard_paths.items():
        _merge_shards(parts, paths[label])
    if stages:
        times.add_wall(time.perf_counter() - started)
    episodes = {label: [json.loads(x) for x in paths[label].read_text().splitlines()] for label, *_ in runs}
    baseline = {**trivial_baseline(env, "test", tasks), "split": trivial_baseline(env, "test")}
    induction = json.loads((out / "induction.json").read_text())
    report = write_report(out, episodes, baseline, cfg, times.summary(), {"recipe": recipe, **induction})
    log.info("report: %s", report)
    return report
