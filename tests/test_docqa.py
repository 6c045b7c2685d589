"""DocQA: corpus, verified questions, splits by module, oracle through the real tools, metrics, CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unimask.envs.corpus import build_corpus, load_corpus
from unimask.envs.docqa import (
    DIFFICULTY,
    HOPS,
    TASK_TYPES,
    DocQAEnvironment,
    breakdown,
    build_dataset,
    oracle_trajectories,
    trivial_baseline,
)
from unimask.envs.docqa.environment import _read_default
from unimask.tokenizer.chat import Turn, render_turns

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> DocQAEnvironment:
    return DocQAEnvironment(cache_dir=tmp_path_factory.mktemp("docqa-cache"))


def test_corpus_documents_have_signature_defaults_and_are_deterministic(tmp_path: Path) -> None:
    docs = build_corpus(["textwrap", "no_such_module_xyz", "json"])
    assert docs == build_corpus(["textwrap", "no_such_module_xyz", "json"])
    by_id = {d["id"]: d for d in docs}
    assert "textwrap" in by_id and by_id["textwrap"]["kind"] == "module"
    assert not any(d["module"] == "no_such_module_xyz" for d in docs)  # an import failure is skipped
    wrap = by_id["textwrap.wrap"]
    assert wrap["kind"] == "function" and wrap["signature"].startswith("textwrap.wrap(text, width=70")
    assert {"name": "width", "default": "70", "kind": "POSITIONAL_OR_KEYWORD"} in wrap["params"]
    assert "textwrap.TextWrapper.wrap" in by_id and by_id["json.dumps"]["summary"]
    assert [d["id"] for d in docs] == sorted(d["id"] for d in docs)
    assert all({"id", "title", "text"} <= d.keys() for d in docs)
    # reprs with memory addresses would differ between processes (same process: same addresses)
    cp = build_corpus(["configparser"])
    getboolean = next(d for d in cp if d["id"] == "configparser.RawConfigParser.getboolean")
    assert "fallback=<object object>" in getboolean["signature"]
    assert " at 0x" not in json.dumps(cp)


def test_corpus_is_cached_and_reused(env: DocQAEnvironment) -> None:
    cached = list(Path(env.cfg.cache_dir).glob("docqa-corpus-*.json"))
    assert len(cached) == 1
    cached[0].write_text(json.dumps(env.docs[:5]), encoding="utf-8")  # the cache, not a rebuild, is read
    assert [d["id"] for d in load_corpus(Path(env.cfg.cache_dir))] == [d["id"] for d in env.docs[:5]]
    cached[0].write_text(json.dumps(env.docs), encoding="utf-8")


def test_questions_have_verified_answers_types_hops_and_module_splits(env: DocQAEnvironment) -> None:
    splits = {s: env.tasks(s) for s in ("train", "val", "test")}
    assert all(len(v) > 20 for v in splits.values())
    modules = {s: {t.meta["module"] for t in v} for s, v in splits.items()}
    assert not modules["train"] & modules["test"] and not modules["train"] & modules["val"]
    assert not modules["val"] & modules["test"]
    ids = [t.id for v in splits.values() for t in v]
    assert len(ids) == len(set(ids))
    for t in splits["test"] + splits["train"][:300]:
        kind, doc = t.meta["type"], env.by_id[t.meta["doc_id"]]
        assert kind in TASK_TYPES and t.meta["hops"] == HOPS[kind]
        if kind == "module":
            assert t.answer == doc["module"] and t.meta["name"] in t.question
        elif kind == "summary":
            assert t.answer == doc["id"] and doc["summary"].rstrip(".") in t.question
        elif kind == "mention_default":  # the target is named only inside the opened doc of another
            target = env.by_id[t.meta["target"]]
            bare = target["id"].rsplit(".", 1)[-1]
            assert t.meta["via"] == doc["id"] and f"`{doc['id']}`" in t.question
            assert f"{bare}()" in env._open_text(doc) and bare not in t.question.replace(doc["id"], "")
            signature = env._open_text(target).split("\n", 1)[0]
            assert _read_default(signature, t.meta["param"]) == t.answer
        else:  # the default can be read off the open observation's signature line
            signature = env._open_text(doc).split("\n", 1)[0]
            assert _read_default(signature, t.meta["param"]) == t.answer
    assert {t.meta["type"] for t in splits["test"]} == set(TASK_TYPES)


def test_tasks_are_deterministic(env: DocQAEnvironment, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = DocQAEnvironment(cache_dir=env.cfg.cache_dir)
    assert [(t.id, t.question, t.answer) for t in other.tasks("test")] == \
        [(t.id, t.question, t.answer) for t in env.tasks("test")]


def test_difficulty_knob_selects_the_task_mix(env: DocQAEnvironment) -> None:
    easy = DocQAEnvironment(cache_dir=env.cfg.cache_dir, difficulty="easy")
    assert {t.meta["type"] for t in easy.tasks("test")} == set(DIFFICULTY["easy"])
    only = DocQAEnvironment(cache_dir=env.cfg.cache_dir, task_types=["default"])
    assert {t.meta["type"] for t in only.tasks("train")} == {"default"}
    with pytest.raises(ValueError, match="difficulty"):
        DocQAEnvironment(cache_dir=env.cfg.cache_dir, difficulty="hardest")
    with pytest.raises(ValueError, match="task types"):
        DocQAEnvironment(cache_dir=env.cfg.cache_dir, task_types=["nope"])
    with pytest.raises(ValueError, match="split"):
        env.tasks("dev")


def test_oracle_solves_the_test_split_through_the_real_tools(env: DocQAEnvironment, tiny_tokenizer) -> None:
    records = oracle_trajectories(env, "test", tiny_tokenizer, recovery_rate=0.2, seed=1)
    em = np.mean([r["em"] for r in records])
    assert len(records) == len(env.tasks("test")) and em >= 0.99
    table = breakdown(records)
    assert {f"type={k}" for k in TASK_TYPES} | {"hops=1", "hops=2", "hops=3"} <= table.keys()
    three = [r for r in records if r["meta"]["hops"] == 3]  # search, open, open the named function
    assert all(sum('"name": "open"' in t["content"] for t in r["turns"]) == 2 for r in three if r["em"])
    assert sum(v["n"] for k, v in table.items() if k.startswith("hops=")) == len(records)
    base = trivial_baseline(env, "test")
    assert base["n"] == len(records) and base["em"] < 0.5 < em
    by_type = [v for k, v in base["breakdown"].items() if k.startswith("type=")]
    assert sum(v["n"] for v in by_type) == base["n"]
    assert sum(v["n"] * v["em"] for v in by_type) == pytest.approx(base["n"] * base["em"])
    some = env.tasks("test")[:5]
    assert trivial_baseline(env, "test", some)["n"] == 5  # scored on exactly the given tasks
    # recoveries: some episodes search twice (a miss, then the retry) and still answer correctly
    retries = [r for r in records if sum('"name": "search"' in t["content"] for t in r["turns"]) == 2]
    assert 0.1 * len(records) < len(retries) < 0.35 * len(records)
    assert np.mean([r["em"] for r in retries]) >= 0.99
    for r in retries:  # the miss is context, not a target; the retry is taught
        actions = [t for t in r["turns"] if t["role"] == "assistant"]
        assert actions[0].get("trainable") is False and all(t.get("trainable", True) for t in actions[1:])
    for r in records[:50]:  # every action is a <think>..</think><tool_call>..</tool_call> turn
        for t in r["turns"]:
            if t["role"] == "assistant":
                assert t["content"].startswith("<think>") and t["content"].endswith("</tool_call>")
                json.loads(t["content"].split("<tool_call>")[1].removesuffix("</tool_call>"))
    # the oracle reads observations, not the gold: corrupt the corpus and it fails
    broken = DocQAEnvironment(cache_dir=env.cfg.cache_dir)
    task = next(t for t in env.tasks("test") if t.meta["type"] == "module")
    broken._tasks = {"train": [], "val": [], "test": [task]}
    for d in broken.docs:
        d["module"] = "nowhere"
    (rec,) = oracle_trajectories(broken, "test", tiny_tokenizer, recovery_rate=0.0)
    assert rec["prediction"] == "nowhere" and rec["em"] == 0.0


def test_trajectories_are_short_and_render(env: DocQAEnvironment, tiny_tokenizer) -> None:
    records = oracle_trajectories(env, "train", tiny_tokenizer, recovery_rate=0.1, limit=200)
    lengths = []
    for r in records:
        turns = [Turn(t["role"], t["content"]) for t in r["turns"]]
        seq = render_turns(turns, tiny_tokenizer)
        assert len(seq.token_ids) == len(seq.turn_ids)
        lengths.append(len(render_turns(turns[1:], tiny_tokenizer).token_ids))  # without the system prompt
    assert np.median(lengths) < 300  # with a 512 vocab; a 4k-8k vocab makes this ~2-3x shorter


def test_build_dataset_writes_jsonl_and_report(env: DocQAEnvironment, tmp_path: Path) -> None:
    small = DocQAEnvironment(cache_dir=env.cfg.cache_dir, task_types=["default"])
    report = build_dataset(small, tmp_path, recovery_rate=0.1)
    assert json.loads((tmp_path / "report.json").read_text())["splits"]["test"]["oracle_em"] >= 0.99
    lines = (tmp_path / "test.jsonl").read_text().splitlines()
    assert len(lines) == report["splits"]["test"]["n"] == len(small.tasks("test"))
    row = json.loads(lines[0])
    assert {"task_id", "turns", "answer", "type", "hops", "module"} <= row.keys()
    assert [t["role"] for t in row["turns"]][:3] == ["system", "user", "assistant"]
    assert row["turns"][-1]["role"] == "assistant" and '"answer"' in row["turns"][-1]["content"]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from(["1", "None", "'a,b'", "(80, 24)", "()", "[1, (2, 3)]", "'x)'", "{}"]),
             min_size=1, max_size=4),
    st.data(),
)
def test_read_default_recovers_any_parameter(defaults: list[str], data: st.DataObject) -> None:
    names = [f"p{i}" for i in range(len(defaults))]
    sig = "mod.f(self, " + ", ".join(f"{n}={d}" for n, d in zip(names, defaults, strict=True)) + ", *, q=0)"
    i = data.draw(st.integers(0, len(names) - 1))
    assert _read_default(sig, names[i]) == defaults[i]
    assert _read_default(sig, "missing") is None


def test_cli_build_and_sample(env: DocQAEnvironment, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from unimask.cli import _mount, app

    _mount()  # what unimask.cli.main does before dispatching
    runner = CliRunner()
    res = runner.invoke(app, ["env", "sample", "docqa", "--n", "3", "--split", "test",
                              "--cache-dir", str(env.cfg.cache_dir)])
    assert res.exit_code == 0, res.output
    assert "docqa/test" in res.output and "prediction=" in res.output
    res = runner.invoke(app, ["env", "build", "docqa", "--out", str(tmp_path), "--difficulty", "easy",
                              "--cache-dir", str(env.cfg.cache_dir)])
    assert res.exit_code == 0, res.output
    types = Counter(json.loads(line)["type"] for line in (tmp_path / "val.jsonl").read_text().splitlines())
    assert set(types) == set(DIFFICULTY["easy"])
    res = runner.invoke(app, ["env", "sample", "nope", "--cache-dir", str(env.cfg.cache_dir)])
    assert res.exit_code != 0
