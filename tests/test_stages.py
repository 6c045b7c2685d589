"""The stage scheduler: needs before priority, one process per stage, failures reach the caller."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from unimask.experiments.stages import Stage, run_stages


def _write(path: Path, text: str = "", wait: float = 0.0, threads_seen: Path | None = None) -> None:
    time.sleep(wait)
    path.write_text(f"{text} {os.getpid()}")
    if threads_seen is not None:
        threads_seen.write_text(str(torch.get_num_threads()))


def _fail() -> None:
    raise RuntimeError("stage broke")


def test_in_process_order_follows_needs_then_priority(tmp_path: Path) -> None:
    done: list[str] = []
    stages = [Stage("c", _write, {"path": tmp_path / "c"}, needs=("b",)),
              Stage("b", _write, {"path": tmp_path / "b"}, needs=("a", "reused")),  # "reused": not listed = met
              Stage("a", _write, {"path": tmp_path / "a"}),
              Stage("d", _write, {"path": tmp_path / "d"})]
    run_stages(stages, 1, lambda name, s: done.append(name))
    assert done == ["a", "b", "c", "d"]
    assert {(tmp_path / n).read_text().split()[-1] for n in "abcd"} == {str(os.getpid())}


def test_workers_run_stages_beside_each_other_in_their_own_processes(tmp_path: Path) -> None:
    times: dict[str, float] = {}
    stages = [Stage("slow", _write, {"path": tmp_path / "slow", "wait": 1.5}, threads=1),
              Stage("quick", _write, {"path": tmp_path / "quick", "threads_seen": tmp_path / "threads"}, threads=1),
              Stage("after", _write, {"path": tmp_path / "after"}, needs=("slow", "quick"))]
    started = time.perf_counter()
    run_stages(stages, 2, times.__setitem__)
    assert set(times) == {"slow", "quick", "after"} and times["slow"] >= 1.5
    assert time.perf_counter() - started < times["slow"] + times["quick"] + times["after"] + 10
    pids = {(tmp_path / n).read_text().split()[-1] for n in ("slow", "quick")}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    assert (tmp_path / "threads").read_text() == "1"
    assert (tmp_path / "after").stat().st_mtime >= (tmp_path / "slow").stat().st_mtime


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_stage_raises_and_its_dependants_never_run(tmp_path: Path, workers: int) -> None:
    stages = [Stage("bad", _fail), Stage("next", _write, {"path": tmp_path / "next"}, needs=("bad",))]
    with pytest.raises(RuntimeError, match="stage broke"):
        run_stages(stages, workers, lambda name, s: None)
    assert not (tmp_path / "next").exists()


def test_stages_that_need_each_other_are_an_error(tmp_path: Path) -> None:
    stages = [Stage("a", _write, {"path": tmp_path / "a"}, needs=("b",)),
              Stage("b", _write, {"path": tmp_path / "b"}, needs=("a",))]
    with pytest.raises(ValueError, match="need each other"):
        run_stages(stages, 1, lambda name, s: None)
    with pytest.raises(ValueError, match="unique"):
        run_stages([stages[0], stages[0]], 1, lambda name, s: None)
