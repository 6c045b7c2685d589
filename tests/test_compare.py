"""The AR-vs-DLLM comparison: report arithmetic on hand-built episodes, a tiny end-to-end run that
resumes by reusing every stage, and an interrupted training stage that must not become "final"."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from unimask.experiments import compare
from unimask.experiments.compare import CompareConfig, _merge_shards, _train, run_compare
from unimask.experiments.report import paired_speedup, summarize, write_report

MAIN = ("AR", "DLLM", "DLLM unaligned")
STAGES = ("pretrain_ar", "pretrain_dllm", "sft_ar", "sft_dllm", "sft_dllm_unaligned")


def episode(task_id: str, *, em: float = 0.0, f1: float = 0.0, rounds: int = 1, tool_calls: int = 0,
            failures: dict[str, int] | None = None, nfe: int = 1, tokens: int = 1, wall_time: float = 1.0,
            model_time: float = 0.0, tool_time: float = 0.0, type_: str = "module",
            hops: int = 1) -> dict[str, Any]:
    """One record shaped like the agent loop's (only the keys the report reads)."""
    e: dict[str, Any] = {"task_id": task_id, "em": em, "f1": f1, "rounds": rounds, "tool_calls": tool_calls,
                         "nfe": nfe, "tokens": tokens, "wall_time": wall_time, "model_time": model_time,
                         "tool_time": tool_time, "meta": {"type": type_, "hops": hops}}
    if failures is not None:
        e["failures"] = failures
    return e


# ---------------------------------------------------------------- report.py on hand-built episodes
def test_summarize_means_rates_and_ratio_of_sums() -> None:
    eps = [
        episode("t1", em=1.0, f1=1.0, rounds=2, tool_calls=2, failures={"no_call": 1}, nfe=10, tokens=20,
                wall_time=2.0, model_time=1.5, tool_time=0.5),
        episode("t2", em=0.0, f1=0.5, rounds=4, tool_calls=1, failures={"no_call": 1, "malformed_json": 2},
                nfe=30, tokens=40, wall_time=4.0, model_time=3.0, tool_time=1.0),
        # no "failures" key at all
        episode("t3", em=0.0, f1=0.0, rounds=3, tool_calls=0, nfe=0, tokens=0, wall_time=9.0),
    ]
    s = summarize(eps)
    assert s["tasks"] == 3
    assert s["em"] == pytest.approx(1 / 3) and s["f1"] == pytest.approx(0.5)
    assert s["rounds_mean"] == pytest.approx(3.0) and s["rounds_median"] == 3
    assert s["rounds_mean_correct"] == pytest.approx(2.0)
    assert s["tool_calls_mean_correct"] == pytest.approx(2.0)
    assert s["tool_calls_mean"] == pytest.approx(1.0)
    # failures over actions (rounds) of all episodes, not a mean of per-episode rates (which would be 1/6)
    assert s["invalid_call_rate"] == pytest.approx(4 / 9)
    assert s["invalid_by_type"] == pytest.approx({"malformed_json": 2 / 9, "no_call": 2 / 9})
    assert list(s["invalid_by_type"]) == ["malformed_json", "no_call"]  # sorted, for a stable table
    assert s["nfe_mean"] == pytest.approx(40 / 3) and s["tokens_mean"] == pytest.approx(20.0)
    assert s["tokens_per_nfe"] == pytest.approx(60 / 40)  # ratio of sums (mean of ratios would be 5/3)
    assert s["wall_mean"] == pytest.approx(5.0) and s["wall_median"] == pytest.approx(4.0)
    assert s["model_time_mean"] == pytest.approx(1.5) and s["tool_time_mean"] == pytest.approx(0.5)


def test_running_out_of_budget_is_not_an_invalid_call() -> None:
    eps = [episode("t1", rounds=2, failures={"budget_exceeded": 1, "malformed_json": 1}),
           episode("t2", rounds=2, failures={})]
    s = summarize(eps)
    assert s["invalid_call_rate"] == pytest.approx(1 / 4) and s["invalid_by_type"] == {"malformed_json": 0.25}
    assert s["out_of_budget_rate"] == pytest.approx(0.5)


def test_summarize_without_episodes_or_correct_ones_gives_nan_not_errors() -> None:
    empty = summarize([])
    assert empty["tasks"] == 0 and empty["invalid_by_type"] == {} and empty["tokens_per_nfe"] == 0
    assert all(math.isnan(empty[k]) for k in ("em", "rounds_mean", "invalid_call_rate", "wall_median"))
    wrong = summarize([episode("t1", em=0.5, rounds=2)])  # partial credit is not "correct"
    assert math.isnan(wrong["rounds_mean_correct"]) and wrong["rounds_mean"] == 2


def test_paired_speedup_pairs_by_task_and_ignores_unmatched_tasks() -> None:
    base = [episode("a", wall_time=2.0), episode("b", wall_time=2.0), episode("only-base", wall_time=50.0)]
    other = [episode("only-other", wall_time=100.0), episode("b", wall_time=1.0), episode("a", wall_time=1.0)]
    s = paired_speedup(base, other)
    assert s["tasks"] == 2
    assert s["speedup"] == pytest.approx(2.0)
    assert s["lo"] == pytest.approx(2.0) and s["hi"] == pytest.approx(2.0)  # no spread: every resample is 2x


def test_paired_speedup_ci_brackets_the_point_and_resamples_pairs() -> None:
    base = [episode(t, wall_time=w) for t, w in (("a", 2.0), ("b", 4.0), ("c", 6.0), ("d", 12.0))]
    other = [episode(t, wall_time=w) for t, w in (("a", 1.0), ("b", 1.0), ("c", 3.0), ("d", 5.0))]
    s = paired_speedup(base, other)
    assert s["tasks"] == 4 and s["speedup"] == pytest.approx(24 / 10)  # ratio of means, not mean of ratios
    assert s["lo"] <= s["speedup"] <= s["hi"] and s["lo"] < s["hi"]
    # the 2.5%/97.5% quantiles of this (discrete) bootstrap distribution are 2.0 and ~3.0: a 95% interval
    for seed in range(5):
        ci = paired_speedup(base, other, seed=seed)
        assert ci["lo"] == pytest.approx(2.0) and 2.9 <= ci["hi"] <= 3.5
    assert paired_speedup(base, other[::-1]) == s  # deterministic (seeded) and independent of record order
    # identical per-task times in a different order: a pair-preserving bootstrap has no spread at all
    same = paired_speedup(base, base[::-1])
    assert (same["speedup"], same["lo"], same["hi"]) == pytest.approx((1.0, 1.0, 1.0))


def test_paired_speedup_without_common_tasks_is_nan() -> None:
    s = paired_speedup([episode("a", wall_time=1.0)], [episode("b", wall_time=1.0)])
    assert s["tasks"] == 0 and all(math.isnan(s[k]) for k in ("speedup", "lo", "hi"))
    assert paired_speedup([], [])["tasks"] == 0


def test_write_report_separates_main_systems_from_the_sweep(tmp_path: Path) -> None:
    ar = [episode("a", em=1.0, wall_time=2.0), episode("b", wall_time=2.0, type_="default", hops=2)]
    dllm = [episode("a", wall_time=1.0), episode("b", em=1.0, wall_time=1.0, type_="default", hops=2)]
    episodes = {"AR": ar, "DLLM": dllm, "DLLM threshold 0.5": dllm[:1]}
    baseline = {"n": 7, "em": 0.25, "f1": 0.5, "breakdown": {"type=default": {"n": 1, "em": 1.0, "f1": 1.0}}}
    path = write_report(tmp_path, episodes, baseline, {"seed": 3}, {"total": 1.0})
    text = path.read_text()
    assert path == tmp_path / "report.md" and (tmp_path / "latency.png").is_file()
    assert (tmp_path / "accuracy_vs_latency.png").is_file()
    assert "| metric | AR | DLLM |\n" in text and "| metric | DLLM threshold 0.5 |\n" in text
    assert "speed-up of DLLM over AR**: 2.00x" in text and "2 tasks" in text
    assert "same 7 test tasks: EM 25.0%" in text
    assert "| type=default | 0.0 (n=1) | 100.0 (n=1) | 100.0 |" in text  # last column: the baseline
    assert "| type=module | 100.0 (n=1) | 0.0 (n=1) | – |" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["main"]) == {"AR", "DLLM"} and set(summary["sweep"]) == {"DLLM threshold 0.5"}
    assert summary["speedup"]["speedup"] == pytest.approx(2.0)


# ---------------------------------------------------------------- the whole pipeline, in miniature
def tiny_config(out_dir: Path) -> CompareConfig:
    return CompareConfig(
        out_dir=str(out_dir),
        # 50 docs per source: with seed 0 and the fixed 5% val fraction, fewer leave the val split
        # empty and pre-training's evaluation fails (compare exposes no val_fraction).
        max_docs=50,
        vocab_size=300,  # the tokenizer's minimum is 256 bytes + 33 specials
        model_preset="tiny",
        # the aligned DLLM SFT objective needs 2.5x the trajectory length (~700 tokens at this vocab)
        model_overrides={"max_seq_len": 2048},
        pretrain_steps=2, pretrain_seq_len=64, pretrain_batch=2, adapt_steps=2, induction_probes=4,
        train_trajectories=20, sft_steps=2, ablation_sft_steps=2, sft_batch=2,
        test_tasks=2, settings_tasks=1, max_rounds=2, max_new_tokens=8, max_context_tokens=256,
        device="cpu",
        eval_threads=0,  # leave this process's torch thread count alone
    )


def quiet_console(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What compare logs, captured instead of shown."""
    buf = io.StringIO()
    logger = logging.getLogger(compare.__name__)
    monkeypatch.setattr(logger, "handlers", [logging.StreamHandler(buf)])
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.manager._clear_cache()
    return buf


def test_run_compare_end_to_end_then_resumes_by_reusing_every_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    cfg = tiny_config(out)
    log = quiet_console(monkeypatch)
    report = run_compare(cfg)

    assert report == out / "report.md"
    text = report.read_text()
    assert "| metric | AR | DLLM | DLLM unaligned |" in text
    assert "End-to-end speed-up of DLLM over AR" in text
    assert json.loads((out / "compare_config.json").read_text()) == json.loads(json.dumps(vars(cfg)))
    finals = {s: out / s / "final" for s in STAGES}
    for stage, final in finals.items():
        assert (final / "config.json").is_file() and (final / "model.safetensors").is_file(), stage
    assert (out / "trajectories" / "train.jsonl").read_text().strip()

    ep_files = sorted((out / "episodes").glob("*.jsonl"))
    assert len(ep_files) == 14 and not list((out / "episodes").glob("*.partial"))
    records = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in ep_files}
    for stem, recs in records.items():
        main = stem in ("ar", "dllm", "dllm_unaligned")
        assert len(recs) == (cfg.test_tasks if main else cfg.settings_tasks), stem
    ids = [r["task_id"] for r in records["ar"]]
    assert len(set(ids)) == 2
    assert [r["task_id"] for r in records["dllm"]] == [r["task_id"] for r in records["dllm_unaligned"]] == ids
    assert all([r["task_id"] for r in recs] == ids[:1] for recs in records.values() if len(recs) == 1)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["main"]) == set(MAIN) and all(s["tasks"] == 2 for s in summary["main"].values())
    assert len(summary["sweep"]) == 11 and summary["speedup"]["tasks"] == 2
    for s in summary["main"].values():
        assert 0 <= s["em_lo"] <= s["em"] <= s["em_hi"] <= 1
    bases = summary["bases"]
    assert bases["recipe"] == "DLLM adapted from the AR base"
    assert {"ar_copy_acc", "ar_loss_drop"} <= set(bases["ar"]) and "diffusion_copy_acc" in bases["dllm"]
    assert "## The bases and their induction metric" in text
    # one shared base: the DLLM was continued from the AR base's final checkpoint
    dllm_cfg = json.loads((finals["pretrain_dllm"] / "config.json").read_text())
    assert dllm_cfg["extra"]["init_from"] == str(finals["pretrain_ar"])
    assert dllm_cfg["extra"]["backbone"] == "block_diffusion"
    val = [json.loads(x) for x in (finals["pretrain_dllm"].parent / "metrics.jsonl").read_text().splitlines()]
    assert any("induction/diffusion_copy_acc" in r for r in val if r["kind"] == "val")  # logged while training
    train_lines = (out / "trajectories" / "train.jsonl").read_text().splitlines()
    assert sum(json.loads(x)["task_id"].endswith("-swap") for x in train_lines) * 2 == len(train_lines)

    # a rerun of the same command retrains nothing and reruns no agent
    first = log.getvalue()
    assert first.count("reusing") == 0 and first.count("▶") == 8 + 14
    kept = [*(f / "model.safetensors" for f in finals.values()), out / "data" / "meta.json",
            out / "trajectories" / "val.jsonl", *ep_files]
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    log.truncate(0)
    log.seek(0)
    assert run_compare(cfg) == report
    stage_times = next(line for line in text.splitlines() if line.startswith("Stage wall times"))
    assert stage_times in report.read_text()  # reused stages report what they cost when they ran
    second = log.getvalue()
    assert "▶" not in second and second.count("reusing") == 8 + 14, second
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in ep_files} == records
    assert not list(out.glob("*/final.partial"))

    # a changed config must not silently reuse the stages of the old one
    with pytest.raises(SystemExit, match=r"sft_steps, threshold changed"):
        run_compare(dataclasses.replace(cfg, sft_steps=3, threshold=0.7))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


# ---------------------------------------------------------------- an interrupted training stage
def _fake_train(monkeypatch: pytest.MonkeyPatch, out: Path, **result: Any) -> list[Any]:
    """Replace the trainer with one that leaves a checkpoint in ``out`` and returns ``result``."""
    from unimask.train import trainer

    seen: list[Any] = []
    ckpt = out / "checkpoints" / "step_00000001"

    def fake(tc: Any, **components: Any) -> Any:
        seen.append(tc)
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text("{}")
        return trainer.TrainResult(step=1, out_dir=out, checkpoint=result.pop("checkpoint", ckpt), **result)

    monkeypatch.setattr(compare, "train", fake)
    return seen


def _train_args(tmp_path: Path) -> dict[str, Any]:
    return {"data": {"kind": "packed", "dir": str(tmp_path / "data"), "seq_len": 8}, "steps": 3, "batch": 2,
            "lr": 1e-3}


def test_interrupted_training_exits_130_without_a_final_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "pretrain_ar"
    seen = _fake_train(monkeypatch, out, interrupted=True)
    log = quiet_console(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        _train(tiny_config(tmp_path), out, [{"name": "causal"}], **_train_args(tmp_path))
    assert exc.value.code == 130
    assert len(seen) == 1 and (out / "checkpoints" / "step_00000001").is_dir()  # it did train, and checkpoint
    assert not (out / "final").exists()
    assert "rerun the same command to resume" in log.getvalue()


def test_finished_training_becomes_final_and_replaces_a_stale_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sft_dllm"
    (out / "final").mkdir(parents=True)
    (out / "final" / "stale.bin").write_text("old")
    seen = _fake_train(monkeypatch, out)
    cfg = tiny_config(tmp_path)
    final = _train(cfg, out, [{"name": "causal"}], init_from="ckpt/x", **_train_args(tmp_path))
    assert final == out / "final"
    assert sorted(p.name for p in final.iterdir()) == ["config.json"]
    (tc,) = seen
    assert tc.out_dir == str(out) and tc.init_from == "ckpt/x" and tc.steps == 3 and tc.micro_batch_size == 2
    assert tc.model.preset == "tiny" and tc.model.overrides == {"vocab_size": 300, "max_seq_len": 2048}
    assert tc.checkpoint_interval == 3 and tc.device == "cpu"


def test_training_without_a_checkpoint_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "pretrain_dllm"
    _fake_train(monkeypatch, out, checkpoint=None)
    with pytest.raises(RuntimeError, match="no checkpoint"):
        _train(tiny_config(tmp_path), out, [{"name": "causal"}], **_train_args(tmp_path))
    assert not (out / "final").exists()


def test_test_tasks_are_spread_over_the_split_not_a_prefix() -> None:
    from unimask.experiments.compare import spread

    ordered = ["module"] * 254 + ["default"] * 99  # the test split is ordered by question type
    picked = spread(list(enumerate(ordered)), 60)
    assert len({i for i, _ in picked}) == 60 and picked[0][0] == 0 and picked[-1][0] == 352
    assert sum(kind == "default" for _, kind in picked) in (16, 17, 18)  # ~28%, as in the split
    assert spread([1, 2], 5) == [1, 2] and spread([1, 2, 3], 1) == [1]


def test_gpu_config_loads_and_builds_its_model() -> None:
    """The GPU-sized config beside the default must parse and name a buildable model (no GPU here)."""
    from unimask.config import load_config
    from unimask.presets import model_preset

    cfg = load_config(CompareConfig, Path(__file__).parents[1] / "configs" / "compare" / "gpu.yaml")
    assert cfg.device == "cuda" and cfg.pretrain_steps > CompareConfig().pretrain_steps
    model = model_preset(cfg.model_preset, **cfg.model_settings())
    assert model.vocab_size == cfg.vocab_size and model.attn_impl == "flex"
    assert model.max_seq_len >= cfg.max_context_tokens  # prompt + action fit (the loop keeps both inside it)
    assert "Qwen2.5" in cfg.ar_init and "Dream" in cfg.dllm_init  # the real pairing (Dream was continued from it)


def test_run_compare_from_hugging_face_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ar_init``/``dllm_init`` as HF directories (a Qwen2-shaped AR model and a Dream-shaped DLLM on
    its vocabulary): converted on load, the corpus read with their tokenizer, the DLLM fine-tuned and
    decoded shifted, through agents and report."""
    from hf_tiny import build_ar_dream_pair
    from unimask.model import read_checkpoint_meta

    ar, dream = build_ar_dream_pair(tmp_path / "hf")
    out = tmp_path / "run"
    # asked unshifted, so the run must notice that Dream is shifted and say so
    cfg = dataclasses.replace(tiny_config(out), ar_init=str(ar), dllm_init=str(dream), ablation_sft_steps=2,
                              test_tasks=1, ablation_tasks=1, dllm_shift=False)
    log = quiet_console(monkeypatch)
    report = run_compare(cfg)
    assert "| metric | AR | DLLM | DLLM unaligned |" in report.read_text()
    assert "dllm_shift=True" in log.getvalue()
    assert not (out / "pretrain_ar").exists() and not (out / "pretrain_dllm").exists()
    assert json.loads((out / "compare_config.json").read_text())["dllm_shift"] is True
    for arm in ("sft_dllm", "sft_dllm_unaligned"):
        assert read_checkpoint_meta(out / arm / "final")["extra"]["shift"] is True
    meta = read_checkpoint_meta(out / "sft_ar" / "final")
    assert meta["extra"]["backbone"] == "ar" and meta["model"]["attn_bias"] is True  # the Qwen2 weights
    assert (out / "data" / "unimask_special_tokens.json").is_file() or "<|mask|>" in (out / "data" / "tokenizer.json").read_text()


def test_merge_shards_restores_task_order(tmp_path: Path) -> None:
    tasks = [f"t{i}" for i in range(5)]
    shards = [tmp_path / f"s{k}.jsonl" for k in range(2)]
    for k, p in enumerate(shards):
        p.write_text("".join(json.dumps({"task_id": t}) + "\n" for t in tasks[k::2]))
    _merge_shards(shards, tmp_path / "all.jsonl")
    assert [json.loads(x)["task_id"] for x in (tmp_path / "all.jsonl").read_text().splitlines()] == tasks
    assert not any(p.exists() for p in shards)
