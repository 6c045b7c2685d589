"""HumanEval and HumanEval infilling: pass@k, scripted backbones, resumption, task construction."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unimask.evals.humaneval import HumanEvalConfig, load_problems, run_humaneval, truncate_at_stops
from unimask.evals.infill import (
    PROMPTS,
    PUBLISHED_COUNTS,
    InfillConfig,
    build_tasks,
    clean_middle,
    codegen2_prompt,
    fim_prompt,
    fim_spm_prompt,
    run_infill,
)
from unimask.evals.runner import SAMPLES_FILE, pass_at_k
from unimask.sampling.backbone import Backbone, Generation
from unimask.tokenizer import special

N_PROBLEMS = 6


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return load_problems(limit=N_PROBLEMS)


@pytest.fixture(scope="module")
def small(problems) -> list[dict]:
    """The two problems with the fewest multi-line tasks, to keep execution tests quick."""
    return sorted(problems, key=lambda p: len(build_tasks([p], "multi-line")))[:2]


class ScriptedBackbone:
    """Answers each prompt with ``answer(prompt)``; counts the prompts it was asked."""

    kind = "scripted"

    def __init__(self, answer: Callable[[str], str], tokenizer=None) -> None:
        self.answer, self.tokenizer, self.calls = answer, tokenizer, 0

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int, stop=None, constraint=None, **decoding
    ):
        self.calls += len(prompts)
        return [Generation(self.answer(p), [], nfe=3, wall_time=0.01, stop_reason="stop") for p in prompts]


class NativeInfiller(ScriptedBackbone):
    kind = "diffusion"

    def __init__(self, answer: Callable[[str, str], str]) -> None:
        super().__init__(lambda p: "")
        self.fill = answer

    def infill(self, prefix, suffix, middle_tokens, **decoding):
        return Generation(self.fill(prefix, suffix), [], nfe=2, wall_time=0.0, stop_reason="eos")


def canonical(problems: list[dict], extra: str = "") -> ScriptedBackbone:
    by_prompt = {p["prompt"]: p["canonical_solution"] for p in problems}
    return ScriptedBackbone(lambda prompt: by_prompt[prompt] + extra)


def test_pass_at_k_reference_values():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 1, 2) == pytest.approx(1 - math.comb(4, 2) / math.comb(5, 2))
    with pytest.raises(ValueError, match="num_samples"):
        pass_at_k(3, 1, 10)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_combinatorial_form(nck):
    n, c, k = nck
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-9)


def test_canonical_solutions_pass_everything(problems, tmp_path):
    # The stop sequences must cut a trailing new function the model went on to write.
    bb = canonical(problems, extra="\n\ndef unrelated(:\n    syntax error")
    assert isinstance(bb, Backbone)
    s = run_humaneval(bb, tmp_path, HumanEvalConfig(num_samples=2, ks=[1, 2], batch_size=4), problems)
    assert s["pass@1"] == 1.0 and s["pass@2"] == 1.0 and s["tasks"] == N_PROBLEMS
    recs = [json.loads(x) for x in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert len(recs) == 2 * N_PROBLEMS and all(r["passed"] for r in recs)
    assert json.loads((tmp_path / "summary.json").read_text())["pass@1"] == 1.0


@pytest.mark.parametrize(
    "completion", ["", "    return None\n", "    while True: pass\n", "    import os; os._exit(0)\n"]
)
def test_empty_wrong_and_hostile_completions_score_zero(problems, tmp_path, completion):
    # os._exit(0) before check() ran must not count: the check call is what proves correctness.
    bb = ScriptedBackbone(lambda p: completion)
    cfg = HumanEvalConfig(timeout=1.0, batch_size=N_PROBLEMS)
    s = run_humaneval(bb, tmp_path, cfg, problems[:3])
    assert s["pass@1"] == 0.0


def test_half_right_gives_half(problems, tmp_path):
    good = {p["prompt"] for p in problems[: N_PROBLEMS // 2]}
    sol = {p["prompt"]: p["canonical_solution"] for p in problems}
    bb = ScriptedBackbone(lambda p: sol[p] if p in good else "    return 12345\n")
    s = run_humaneval(bb, tmp_path, HumanEvalConfig(), problems)
    assert s["pass@1"] == pytest.approx(0.5)


def test_resume_skips_completed_samples(problems, tmp_path):
    bb = canonical(problems)
    run_humaneval(bb, tmp_path, HumanEvalConfig(num_samples=2, ks=[1]), problems)
    assert bb.calls == 2 * N_PROBLEMS
    path = tmp_path / SAMPLES_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-3]) + "\n" + lines[-3][: len(lines[-3]) // 2])  # torn last line
    bb2 = canonical(problems)
    s = run_humaneval(bb2, tmp_path, HumanEvalConfig(num_samples=2, ks=[1]), problems)
    assert bb2.calls == 3 and s["samples"] == 2 * N_PROBLEMS and s["pass@1"] == 1.0


def test_truncate_at_stops():
    assert truncate_at_stops("    return 1\n\ndef g():\n    pass") == "    return 1\n"
    assert truncate_at_stops("    return 1\nif __name__ == '__main__':\n") == "    return 1"
    assert truncate_at_stops("    return 1") == "    return 1"


def test_infill_task_counts_match_the_published_benchmark():
    problems = load_problems()
    for mode, count in PUBLISHED_COUNTS.items():
        tasks = build_tasks(problems, mode)
        assert len(tasks) == count, mode
        assert len({t.task_id for t in tasks}) == count


def test_infill_tasks_reassemble_the_solution(problems):
    by_id = {p["task_id"]: p for p in problems}
    for mode in PUBLISHED_COUNTS:
        for t in build_tasks(problems, mode):
            p = by_id[t.problem_id]
            assert t.prefix + t.middle + t.suffix == p["prompt"] + p["canonical_solution"]
            if mode != "random-span":
                assert t.middle.strip() and t.middle.endswith("\n")
            if mode == "single-line":
                assert t.middle.count("\n") == 1
    assert [t.middle for t in build_tasks(problems, "random-span", seed=1)] != [
        t.middle for t in build_tasks(problems, "random-span", seed=2)
    ]


def test_prompt_formats():
    assert (
        codegen2_prompt("A", "B") == f"A{special.sentinel(1)}B{special.EOS}{special.SEP}{special.sentinel(1)}"
    )
    assert fim_prompt("A", "B") == f"{special.FIM_PREFIX}A{special.FIM_SUFFIX}B{special.FIM_MIDDLE}"
    assert fim_spm_prompt("A", "B") == f"{special.FIM_PREFIX}{special.FIM_SUFFIX}B{special.FIM_MIDDLE}A"
    assert clean_middle(f"x = 1\n{special.EOM}junk", "codegen2", "multi-line") == "x = 1\n"
    assert clean_middle("x = 1\ny = 2\n", "fim", "single-line") == "x = 1\n"
    assert clean_middle("x = 1\ny = 2\n", "fim", "multi-line") == "x = 1\ny = 2\n"


def _middle_lookup(problems: list[dict], fmt: str) -> dict[str, str]:
    out = {}
    for mode in PUBLISHED_COUNTS:
        for t in build_tasks(problems, mode):
            out[PROMPTS[fmt](t.prefix, t.suffix)] = t.middle
    return out


@pytest.mark.parametrize("fmt", ["codegen2", "fim", "fim-spm"])
def test_canonical_middles_pass_and_match(small, tmp_path, fmt):
    few = small
    mids = _middle_lookup(few, fmt)
    end = special.EOM if fmt == "codegen2" else special.EOS
    bb = ScriptedBackbone(lambda p: mids[p] + end + "garbage(")
    s = run_infill(bb, tmp_path, InfillConfig(format=fmt, batch_size=16), few)
    for mode, ms in s["modes"].items():
        assert ms["tasks"] == len(build_tasks(few, mode))
        assert ms["pass@1"] == 1.0 and ms["exact_match"] == 1.0, mode


def test_wrong_middles_fail_and_do_not_match(small, tmp_path):
    few = small
    bb = ScriptedBackbone(lambda p: "raise SystemExit(1)\n" + special.EOM)
    s = run_infill(bb, tmp_path, InfillConfig(modes=["single-line", "multi-line"]), few)
    for ms in s["modes"].values():
        assert ms["pass@1"] == 0.0 and ms["exact_match"] == 0.0


def test_native_infill_uses_the_backbone_infill(problems, tmp_path):
    few = problems[:2]
    mids = {(t.prefix, t.suffix): t.middle for t in build_tasks(few, "single-line")}
    bb = NativeInfiller(lambda p, s: mids[(p, s)])
    s = run_infill(bb, tmp_path, InfillConfig(format="native", modes=["single-line"]), few)
    assert s["modes"]["single-line"]["pass@1"] == 1.0
    with pytest.raises(ValueError, match="no native infill"):
        run_infill(canonical(few), tmp_path / "x", InfillConfig(format="native"), few)


def test_bad_mode_and_format_are_clear_errors(problems, tmp_path):
    with pytest.raises(ValueError, match="infilling mode"):
        build_tasks(problems, "two-line")
    with pytest.raises(ValueError, match="infill format"):
        run_infill(canonical(problems), tmp_path, InfillConfig(format="psm"), problems)


@pytest.mark.slow
def test_all_canonical_solutions_pass_full_humaneval(tmp_path):
    problems = load_problems()
    s = run_humaneval(canonical(problems), tmp_path, HumanEvalConfig(batch_size=32), problems)
    assert s["tasks"] == 164 and s["pass@1"] == 1.0


@pytest.mark.slow
def test_all_canonical_single_line_middles_pass(tmp_path):
    problems = load_problems()
    mids = {codegen2_prompt(t.prefix, t.suffix): t.middle for t in build_tasks(problems, "single-line")}
    bb = ScriptedBackbone(lambda p: mids[p] + special.EOM)
    s = run_infill(bb, tmp_path, InfillConfig(modes=["single-line"], batch_size=64), problems)
    assert s["modes"]["single-line"]["pass@1"] == 1.0


def test_a_crash_mid_run_keeps_finished_batches(problems, tmp_path):
    sol = {p["prompt"]: p["canonical_solution"] for p in problems}
    calls = []

    def flaky(prompt: str) -> str:
        calls.append(prompt)
        if len(calls) > 4:
            raise RuntimeError("GPU fell over")
        return sol[prompt]

    with pytest.raises(RuntimeError, match="GPU fell over"):
        run_humaneval(ScriptedBackbone(flaky), tmp_path, HumanEvalConfig(batch_size=2), problems)
    kept = (tmp_path / SAMPLES_FILE).read_text().splitlines()
    assert len(kept) == 4 and all(json.loads(x)["passed"] for x in kept)
    bb = canonical(problems)
    s = run_humaneval(bb, tmp_path, HumanEvalConfig(batch_size=2), problems)
    assert bb.calls == N_PROBLEMS - 4 and s["pass@1"] == 1.0


def test_custom_problem_file(tmp_path):
    prob = {
        "task_id": "Mine/0",
        "entry_point": "inc",
        "prompt": "def inc(x):\n",
        "canonical_solution": "    return x + 1\n",
        "test": "def check(f):\n    assert f(1) == 2\n",
    }
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(prob) + "\n")
    s = run_humaneval(
        ScriptedBackbone(lambda p: "    return x + 1\n"),
        tmp_path / "out",
        HumanEvalConfig(data_path=str(path)),
    )
    assert s["tasks"] == 1 and s["pass@1"] == 1.0
    s = run_humaneval(
        ScriptedBackbone(lambda p: "    return x\n"), tmp_path / "out2", HumanEvalConfig(data_path=str(path))
    )
    assert s["pass@1"] == 0.0
    with pytest.raises(FileNotFoundError, match="not found"):
        load_problems(tmp_path / "missing.jsonl")


def test_resuming_with_another_setting_is_refused(problems, tmp_path):
    run_humaneval(canonical(problems), tmp_path, HumanEvalConfig(limit=2), problems[:2])
    with pytest.raises(ValueError, match="temperature"):
        run_humaneval(canonical(problems), tmp_path, HumanEvalConfig(temperature=0.8), problems[:2])
    s = run_humaneval(
        canonical(problems), tmp_path, HumanEvalConfig(batch_size=1), problems[:2]
    )  # same setting
    assert s["pass@1"] == 1.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spans=st.integers(1, 20), idx=st.integers(0, N_PROBLEMS - 1))
def test_random_spans_always_reassemble(problems, seed, spans, idx):
    p = problems[idx]
    tasks = build_tasks([p], "random-span", seed=seed, spans_per_problem=spans)
    assert len(tasks) == spans
    assert all(t.prefix + t.middle + t.suffix == p["prompt"] + p["canonical_solution"] for t in tasks)
    assert tasks == build_tasks([p], "random-span", seed=seed, spans_per_problem=spans)  # deterministic


class TinyGreedy:
    """A real (random, untrained) tiny transformer decoded greedily: junk code, through the harness."""

    kind = "ar"

    def __init__(self, tokenizer) -> None:
        import torch

        from unimask.model import Transformer
        from unimask.presets import model_preset

        torch.manual_seed(0)
        self.tokenizer = tokenizer
        self.model = Transformer(model_preset("tiny", vocab_size=tokenizer.vocab_size)).eval()

    def generate(self, prompts, *, max_new_tokens, stop=None, constraint=None, **decoding):
        import torch

        out = []
        for p in prompts:
            ids = self.tokenizer.encode(p)[-200:]
            new: list[int] = []
            with torch.no_grad():
                for _ in range(max_new_tokens):
                    logits = self.model(torch.tensor([ids + new]))
                    new.append(int(logits[0, -1].argmax()))
            out.append(Generation(self.tokenizer.decode(new), new, max_new_tokens, 0.0, "length"))
        return out


def test_a_real_untrained_model_scores_zero_without_breaking_the_harness(problems, tmp_path, tiny_tokenizer):
    pytest.importorskip("unimask.presets")
    bb = TinyGreedy(tiny_tokenizer)
    s = run_humaneval(bb, tmp_path, HumanEvalConfig(max_new_tokens=8, timeout=2.0), problems[:2])
    assert s["pass@1"] == 0.0 and s["samples"] == 2 and s["mean_nfe"] == 8
    recs = [json.loads(x) for x in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert all(r["status"] in ("error", "timeout", "killed", "memory") for r in recs)
