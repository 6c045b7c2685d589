"""Trainer tests: schedule, backbone table, loss goes down, accumulation exactness, checkpoints,
SIGKILL-then-resume bit-identical to a straight run, kill during save, keep-last-K, sources, CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from test_train_support import ListSource, stdlib_windows, tiny_config  # noqa: E402
from unimask.config import ConfigError, load_config  # noqa: E402
from unimask.train.config import ObjectiveSpec, OptimSection, TrainConfig  # noqa: E402
from unimask.train.optim import lr_at  # noqa: E402
from unimask.train.trainer import Trainer, infer_backbone, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).parent / "test_train_support.py"


@pytest.fixture(scope="module")
def windows(tiny_tokenizer):
    return stdlib_windows(tiny_tokenizer)


def _weights(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    from unimask.model import load_checkpoint

    model, _, _ = load_checkpoint(ckpt_dir)
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- schedule and config
@settings(max_examples=25, deadline=None)
@given(warmup=st.integers(0, 20), total=st.integers(21, 200))
def test_lr_warmup_then_cosine(warmup: int, total: int) -> None:
    cfg = OptimSection(lr=1e-3, min_lr=1e-4, warmup_steps=warmup)
    lrs = [lr_at(s, total, cfg) for s in range(total + 5)]
    assert all(cfg.min_lr - 1e-12 <= x <= cfg.lr + 1e-12 for x in lrs[warmup:])
    if warmup:
        assert lrs[0] == pytest.approx(cfg.lr / warmup)
        assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup], strict=False))
        assert lrs[warmup - 1] == pytest.approx(cfg.lr)
    assert lrs[warmup] == pytest.approx(cfg.lr)
    assert all(b <= a + 1e-15 for a, b in zip(lrs[warmup:], lrs[warmup + 1 :], strict=False))
    assert lrs[total] == pytest.approx(cfg.min_lr)


def test_backbone_recorded_per_objective_family(tiny_tokenizer) -> None:
    assert infer_backbone([ObjectiveSpec("causal"), ObjectiveSpec("codegen2_infill")]) == {"backbone": "ar"}
    assert infer_backbone([ObjectiveSpec("agent_sft_ar")]) == {"backbone": "ar"}
    assert infer_backbone([ObjectiveSpec("masked_diffusion")]) == {"backbone": "masked_diffusion"}
    bd = infer_backbone([ObjectiveSpec("block_diffusion", params={"block_size": 8, "clean_attention": "causal"})])
    assert bd == {"backbone": "block_diffusion", "block_size": 8, "clean_attention": "causal"}
    # with a tokenizer the objective's own defaults are recorded
    real = infer_backbone([ObjectiveSpec("agent_sft_diffusion", params={"block_size": 4})], tiny_tokenizer)
    assert real == {"backbone": "block_diffusion", "block_size": 4, "clean_attention": "causal"}
    unaligned = infer_backbone([ObjectiveSpec("agent_sft_diffusion", params={"aligned": False})], tiny_tokenizer)
    assert unaligned == {"backbone": "masked_diffusion"}
    with pytest.raises(ConfigError, match="pick one"):
        infer_backbone([ObjectiveSpec("masked_diffusion"), ObjectiveSpec("block_diffusion")])
    shifted = [ObjectiveSpec("block_diffusion", params={"block_size": 8, "shift": True}),
               ObjectiveSpec("copy_diffusion", params={"block_size": 8, "shift": True})]
    assert infer_backbone(shifted, tiny_tokenizer)["shift"] is True
    with pytest.raises(ConfigError, match="shifted and unshifted"):
        infer_backbone([shifted[0], ObjectiveSpec("copy_diffusion", params={"block_size": 8})])


def test_shipped_configs_load_and_bad_keys_are_named() -> None:
    files = sorted((REPO / "configs" / "train").glob("*.yaml")) + sorted((REPO / "configs" / "ablation").glob("*.yaml"))
    assert files, "configs/train and configs/ablation should ship example configs"
    for f in files:
        cfg = load_config(TrainConfig, f)
        assert cfg.objectives
    with pytest.raises(ConfigError, match="valid keys"):
        load_config(TrainConfig, files[0], {"optim.learning_rate": "1"})
    with pytest.raises(ConfigError, match="micro_batch_size"):
        load_config(TrainConfig, files[0], {"micro_batch_size": "0"})


# ---------------------------------------------------------------- the loop
def test_loss_decreases_and_run_artifacts(tmp_path, tiny_tokenizer, windows) -> None:
    from unimask.model import load_checkpoint

    cfg = tiny_config(tmp_path / "run", steps=25, checkpoint_interval=0, eval_interval=25, tensorboard=True,
                      optim__warmup_steps=3, optim__lr=5e-3)
    res = train(cfg, tokenizer=tiny_tokenizer, train_source=ListSource(windows[:8]), val_raws=windows[:4])
    assert res.step == 25 and len(res.losses) == 25
    assert sum(res.losses[-5:]) / 5 < res.losses[0] - 0.5
    assert res.tokens == 25 * 4 * 32
    assert res.eval["causal"] < res.losses[0]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 26))
    assert any(r["kind"] == "val" and "causal" in r for r in records)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents*"))
    _, tok, extra = load_checkpoint(res.checkpoint)  # a final checkpoint is always written
    assert extra["backbone"] == "ar" and extra["train_config"]["steps"] == 25
    assert tok.vocab_size == tiny_tokenizer.vocab_size


def test_bf16_autocast_trains_on_cpu_and_auto_picks_it_only_where_native(tmp_path, tiny_tokenizer, windows,
                                                                        monkeypatch) -> None:
    import torch

    from unimask.train import factories

    cfg = tiny_config(tmp_path / "run", steps=25, checkpoint_interval=0, dtype="bf16", optim__warmup_steps=3,
                      optim__lr=5e-3)
    res = train(cfg, tokenizer=tiny_tokenizer, train_source=ListSource(windows[:8]))
    assert sum(res.losses[-5:]) / 5 < res.losses[0] - 0.5
    cpu = torch.device("cpu")
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(factories, "native_bf16", lambda device, n=native: n)
        assert factories.amp_dtype_for(tiny_config(tmp_path, dtype="auto"), cpu) is expected
    assert factories.amp_dtype_for(tiny_config(tmp_path, dtype="fp32"), cpu) is None


def test_grad_accumulation_is_exact(tmp_path, tiny_tokenizer, windows) -> None:
    """micro 4 x accum 1 and micro 2 x accum 2 and micro 1 x accum 4 train the same weights."""
    results = []
    for micro, accum in [(4, 1), (2, 2), (1, 4)]:
        cfg = tiny_config(tmp_path / f"m{micro}", steps=3, micro_batch_size=micro, grad_accum=accum,
                          checkpoint_interval=0, optim__fused=False)
        res = train(cfg, tokenizer=tiny_tokenizer, train_source=ListSource(windows))
        results.append((res.losses, _weights(res.checkpoint)))
    for losses, weights in results[1:]:
        assert losses == pytest.approx(results[0][0], abs=1e-5)
        for k, v in weights.items():
            torch.testing.assert_close(v, results[0][1][k], atol=2e-5, rtol=1e-4)


def test_keep_last_k_and_init_from(tmp_path, tiny_tokenizer, windows) -> None:
    cfg = tiny_config(tmp_path / "a", steps=7, checkpoint_interval=2, keep_last_k=2)
    res = train(cfg, tokenizer=tiny_tokenizer, train_source=ListSource(windows))
    kept = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert kept == ["step_00000006", "step_00000007"]
    # fine-tuning starts from the checkpoint's weights, with a fresh step counter
    ft = tiny_config(tmp_path / "ft", steps=1, init_from=str(res.checkpoint))
    trainer = Trainer(ft, train_source=ListSource(windows))
    start = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    for k, v in _weights(res.checkpoint).items():
        assert torch.equal(start[k], v)
    assert trainer.step == 0 and trainer.tokenizer.vocab_size == tiny_tokenizer.vocab_size


# ---------------------------------------------------------------- exact resume after SIGKILL
def _child(out_dir: Path, steps: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(SUPPORT), str(out_dir), str(steps), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted 6-step child run (checkpoints every 2 steps), the reference for resumes."""
    root = tmp_path_factory.mktemp("resume")
    assert "DONE" in _finish(_child(root / "straight", 6))
    return root


def test_sigkill_then_resume_is_bit_identical(straight) -> None:
    root = straight
    proc = _child(root / "killed", 6, "--sleep-after-save", "4")
    for line in proc.stdout:
        if line.startswith("SAVED 4"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (root / "killed" / "checkpoints" / "step_00000004").is_dir()
    _finish(_child(root / "killed", 6))  # resumes from step 4
    a = _weights(root / "straight" / "checkpoints" / "step_00000006")
    b = _weights(root / "killed" / "checkpoints" / "step_00000006")
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(root / "straight/checkpoints/step_00000006/trainer_state.pt", weights_only=False)
    sb = torch.load(root / "killed/checkpoints/step_00000006/trainer_state.pt", weights_only=False)
    for pid, st_a in sa["optimizer"]["state"].items():
        assert torch.equal(st_a["exp_avg_sq"], sb["optimizer"]["state"][pid]["exp_avg_sq"])
    assert sa["ranks"][0]["data"] == sb["ranks"][0]["data"]
    la = (root / "straight" / "metrics.jsonl").read_text().splitlines()
    lb = (root / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in la] == [json.loads(x)["loss"] for x in lb]


def test_kill_during_save_keeps_previous_checkpoint(straight) -> None:
    run = straight / "torn"
    proc = _child(run, 6, "--kill-in-save", "4")
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    ckpts = run / "checkpoints"
    assert (ckpts / "step_00000002").is_dir() and not (ckpts / "step_00000004").exists()
    assert any(p.name.endswith(".tmp") for p in ckpts.iterdir())  # the torn save stayed in its temp dir
    assert _weights(ckpts / "step_00000002")
    _finish(_child(run, 6))
    assert not any(p.name.startswith(".") for p in ckpts.iterdir())
    a = _weights(straight / "straight" / "checkpoints" / "step_00000006")
    b = _weights(ckpts / "step_00000006")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- trajectories
def _write_trajectories(path: Path, n: int) -> None:
    lines = []
    for i in range(n):
        turns = [
            {"role": "system", "content": "You are a search agent."},
            {"role": "user", "content": f"find item {i}"},
            {"role": "assistant", "content": f'search("item {i}")'},
            {"role": "tool", "content": f"item {i} is at index {i * 3}"},
            {"role": "assistant", "content": f"answer: {i * 3}"},
        ]
        lines.append(json.dumps({"turns": turns, "id": i}))
    path.write_text("\n".join(lines) + "\n")


def test_trajectory_source_cursor_and_errors(tmp_path, tiny_tokenizer) -> None:
    from unimask.tokenizer.chat import Turn, render_turns
    from unimask.train.sources import TrajectorySource

    path = tmp_path / "traj.jsonl"
    _write_trajectories(path, 5)
    a = TrajectorySource(path, tiny_tokenizer, max_len=64, seed=3)
    first = [next(a).token_ids for _ in range(7)]
    state = a.state_dict()
    rest = [next(a).token_ids for _ in range(6)]
    b = TrajectorySource(path, tiny_tokenizer, max_len=64, seed=3)
    b.load_state_dict(state)
    assert [next(b).token_ids for _ in range(6)] == rest
    # an epoch is a permutation of all trajectories, each rendered with the shared chat template
    expected = sorted(
        tuple(render_turns([Turn(**t) for t in json.loads(line)["turns"]], tiny_tokenizer).token_ids[:64])
        for line in path.read_text().splitlines()
    )
    assert sorted(tuple(x) for x in first[:5]) == expected
    assert all(len(x) <= 64 for x in first)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"turns": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{"nope": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        TrajectorySource(bad, tiny_tokenizer, max_len=64)


def test_agent_sft_from_trajectories(tmp_path, tiny_tokenizer) -> None:
    path = tmp_path / "traj.jsonl"
    _write_trajectories(path, 6)
    cfg = tiny_config(tmp_path / "sft", steps=4, checkpoint_interval=0, eval_interval=4,
                      data__kind="trajectories", data__train_path=str(path), data__val_path=str(path),
                      data__max_len=64, objectives=[{"name": "agent_sft_ar"}])
    res = train(cfg, tokenizer=tiny_tokenizer)
    assert res.step == 4 and all(math.isfinite(x) for x in res.losses)
    assert "agent_sft_ar" in res.eval


# ---------------------------------------------------------------- CLI
def test_cli_train_with_overrides(tmp_path, tiny_tokenizer, monkeypatch) -> None:
    from typer.testing import CliRunner

    from unimask.cli import _mount, app

    path = tmp_path / "traj.jsonl"
    _write_trajectories(path, 4)
    tiny_tokenizer.save(tmp_path / "tok")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: {preset: tiny, overrides: {d_model: 32, n_layers: 2, n_heads: 2, n_kv_heads: 2}}\n"
        f"data: {{kind: trajectories, train_path: {path}, tokenizer: {tmp_path / 'tok'}, max_len: 48}}\n"
        "objectives: [{name: agent_sft_ar}]\nsteps: 50\nmicro_batch_size: 2\neval_interval: 0\n"
        "progress: false\ntensorboard: false\n"
    )
    _mount()
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(cfg), "--steps", "2", "--out_dir", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "checkpoints" / "step_00000002").is_dir()
    res = runner.invoke(app, ["train", str(cfg), "--optim.lrr", "1"])
    assert res.exit_code == 2 and "lrr" in res.output


# ---------------------------------------------------------------- validation loss
def test_validation_loss_matches_hand_computation(tiny_tokenizer, windows) -> None:
    import numpy as np

    from unimask.objectives import build_objective
    from unimask.objectives.example import collate, example_loss
    from unimask.train.factories import build_model
    from unimask.train.validation import validation_loss

    cfg = tiny_config("unused")
    torch.manual_seed(0)
    model = build_model(cfg, tiny_tokenizer)
    model.train()
    causal = build_objective("causal", tiny_tokenizer)
    raws = windows[:5]
    out = validation_loss(model, raws, {"causal": causal}, tiny_tokenizer.pad_id, torch.device("cpu"), batch_size=2)
    assert model.training  # mode restored
    with torch.no_grad():
        batch = collate([causal(r, np.random.default_rng([0, i])) for i, r in enumerate(raws)], tiny_tokenizer.pad_id)
        model.eval()
        want = example_loss(model(batch.input_ids, batch.attention), batch.labels, batch.loss_weights).mean()
    assert out["causal"] == pytest.approx(float(want), rel=1e-5)
    assert out["causal_ppl"] == pytest.approx(math.exp(float(want)), rel=1e-5)
    doubled = validation_loss(model, raws, {"causal": causal}, tiny_tokenizer.pad_id, torch.device("cpu"),
                              batch_size=5, reduce=lambda t: t * torch.tensor([3.0, 1.0], dtype=t.dtype))
    assert doubled["causal"] == pytest.approx(3 * out["causal"], rel=1e-5)


def test_packed_source_resumes_from_prepared_data(tmp_path, tiny_tokenizer_path) -> None:
    from unimask.data import DataConfig, SourceConfig, TokenizerSettings, prepare_data
    from unimask.train.sources import PackedSource

    root = Path(sys.modules["json"].__file__).parent
    cfg = DataConfig(sources=[SourceConfig(name="json", kind="glob", path=str(root), pattern="*.py")],
                     tokenizer=TokenizerSettings(path=str(tiny_tokenizer_path)), out_dir=str(tmp_path / "d"),
                     workers=0, val_fraction=0.2, max_docs=None)
    data_dir = prepare_data(cfg, progress=False)
    a = PackedSource(data_dir, "train", 16, seed=1)
    [next(a) for _ in range(5)]
    state = a.state_dict()
    rest = [next(a).tokens for _ in range(7)]
    b = PackedSource(data_dir, "train", 16, seed=1)
    b.load_state_dict(state)
    assert all(torch.equal(x, next(b).tokens) for x in rest)


def test_sigterm_stops_after_the_step_with_a_checkpoint(tmp_path, tiny_tokenizer, windows) -> None:
    class TermAt(ListSource):
        def __next__(self):
            if self.i == 9:  # during step 3 (4 raw examples per step)
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__next__()

    cfg = tiny_config(tmp_path / "run", steps=50, checkpoint_interval=0)
    before = signal.getsignal(signal.SIGTERM)
    res = train(cfg, tokenizer=tiny_tokenizer, train_source=TermAt(windows))
    assert res.step == 3 and res.checkpoint.name == "step_00000003" and res.interrupted
    assert signal.getsignal(signal.SIGTERM) == before
    res = train(cfg, tokenizer=tiny_tokenizer, train_source=ListSource(windows))  # resumes and finishes
    assert res.step == 50 and len(res.losses) == 47 and not res.interrupted


@pytest.mark.parametrize(
    ("objectives", "backbone"),
    [
        ([{"name": "prefix_lm"}, {"name": "codegen2"}, {"name": "fim"}, {"name": "span_corruption"}], "ar"),
        ([{"name": "block_diffusion", "params": {"block_size": 8}}], "block_diffusion"),
        ([{"name": "masked_diffusion"}], "masked_diffusion"),
    ],
)
def test_one_loop_for_every_objective_family(tmp_path, tiny_tokenizer, windows, objectives, backbone) -> None:
    from unimask.model import load_checkpoint

    cfg = tiny_config(tmp_path / "run", steps=3, checkpoint_interval=0, eval_interval=3, objectives=objectives)
    res = train(cfg, tokenizer=tiny_tokenizer, train_source=ListSource(windows), val_raws=windows[:4])
    assert all(math.isfinite(x) for x in res.losses)
    assert {o["name"] for o in objectives} <= set(res.eval)  # validation loss per objective
    _, _, extra = load_checkpoint(res.checkpoint)
    assert extra["backbone"] == backbone
    if backbone == "block_diffusion":
        assert extra["block_size"] == 8 and extra["clean_attention"] == "causal"
