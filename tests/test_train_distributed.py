"""torchrun on CPU with gloo: 2 processes (DDP and FSDP2) give the same losses and weights as 1
process at the same global batch -- the data stream is world-size invariant by construction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_train_support import stdlib_texts  # noqa: E402

SUPPORT = Path(__file__).parent / "test_train_support.py"
pytestmark = pytest.mark.distributed


def _run(out_dir: Path, nproc: int, strategy: str, micro: int, accum: int, steps: int = 4) -> list[float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(SUPPORT), str(out_dir), str(steps), "--set", "distributed", strategy,
           "--set", "micro_batch_size", str(micro), "--set", "grad_accum", str(accum),
           "--set", "checkpoint_interval", "2", "--set", "optim.fused", "false",
           "--set", "optim.warmup_steps", "2", "--set", "eval_interval", "2"]  # evals before saves (FSDP2 reshard)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out_dir / "losses.json").read_text())


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from unimask.model import load_checkpoint

    model, _, _ = load_checkpoint(run / "checkpoints" / "step_00000004")
    return model.state_dict()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Shared tokenizer and the single-process reference run (micro 2 x accum 2 = global batch 4)."""
    from unimask.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("dist")
    train_tokenizer(stdlib_texts(), vocab_size=512).save(root / "tok" / "tokenizer.json")
    return root, _run(root / "single", 1, "ddp", micro=2, accum=2)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one_rank_at_same_global_batch(runs, strategy) -> None:
    root, single = runs
    double = _run(root / f"double_{strategy}", 2, strategy, micro=1, accum=2)
    assert len(single) == len(double) == 4
    assert double == pytest.approx(single, abs=2e-5)
    a, b = _weights(root / "single"), _weights(root / f"double_{strategy}")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("first", "then"),
    [(("ddp", 2), ("ddp", 1)), pytest.param(("fsdp", 2), ("fsdp", 2), marks=pytest.mark.slow)],
)
def test_resume_matches_straight_run(runs, first, then) -> None:
    """Checkpoint at step 2, resume (DDP on 2 ranks -> 1 process; FSDP2 -> FSDP2) == straight 1-process run."""
    root, straight = runs
    run = root / f"resume_{first[0]}_{then[1]}"
    _run(run, first[1], first[0], micro=4 // (2 * first[1]), accum=2, steps=2)
    resumed = _run(run, then[1], then[0], micro=4 // (2 * then[1]), accum=2)
    assert resumed == pytest.approx(straight[2:], abs=2e-5)
    a, b = _weights(root / "single"), _weights(run)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=5e-5, rtol=1e-4)
