"""Agent runtime: protocol parsing, failure taxonomy, tools, the loop, and a fuzz test of the loop."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unimask.agent import (
    Failure,
    LoopConfig,
    ScriptedPolicy,
    Task,
    format_action,
    parse_action,
    run_episodes,
    run_paired_episodes,
    tool_call_schema,
)
from unimask.agent.env import exact_match, token_f1
from unimask.agent.tools import BM25Index, answer_tool, open_tool, python_tool, search_tool
from unimask.tokenizer.chat import Turn, parse_rendered, render_text

DOCS = [
    {"id": "json.dumps", "title": "json.dumps", "text": "Serialize obj to a JSON formatted str. indent=None"},
    {"id": "json.loads", "title": "json.loads", "text": "Deserialize s to a Python object."},
    {"id": "os.path.join", "title": "os.path.join", "text": "Join two or more pathname components."},
]


class TinyEnv:
    name = "tiny"

    def __init__(self, tmp_path):
        index = BM25Index(DOCS, tmp_path)
        self._tools = [search_tool(index, lambda d: d["text"][:30]), open_tool(DOCS, lambda d: d["text"]),
                       answer_tool()]

    def tools(self):
        return self._tools

    def system_prompt(self) -> str:
        return "Use tools."

    def tasks(self, split):
        return [Task("t1", "Default of indent in json.dumps?", "None")]

    def score(self, task, prediction):
        return {"em": exact_match(prediction, task.answer), "f1": token_f1(prediction, task.answer)}


@pytest.fixture()
def env(tmp_path):
    return TinyEnv(tmp_path)


def test_parse_valid_and_every_failure(env):
    tools = env.tools()
    ok = parse_action("chatter " + format_action("search", {"query": "json"}, "find it") + " trailing", tools)
    assert ok.ok and ok.name == "search" and ok.arguments == {"query": "json"} and ok.thought == "find it"
    cases = {
        "no call at all": Failure.NO_CALL,
        "<tool_call>{not json</tool_call>": Failure.MALFORMED_JSON,
        '<tool_call>["search"]</tool_call>': Failure.MALFORMED_JSON,
        '<tool_call>{"name": "fly", "arguments": {}}</tool_call>': Failure.UNKNOWN_TOOL,
        '<tool_call>{"name": "search", "arguments": {"query": 3}}</tool_call>': Failure.SCHEMA_VIOLATION,
        '<tool_call>{"name": "search", "arguments": {}}</tool_call>': Failure.SCHEMA_VIOLATION,
        '<tool_call>{"name": "search", "arguments": "q"}</tool_call>': Failure.SCHEMA_VIOLATION,
    }
    for text, failure in cases.items():
        assert parse_action(text, tools).failure is failure, text


def test_tool_call_schema_accepts_exactly_valid_envelopes(env):
    import jsonschema

    schema = tool_call_schema(env.tools())
    doc_id = env.tools()[1].parameters["properties"]["doc_id"]["enum"][0]
    jsonschema.validate({"name": "open", "arguments": {"doc_id": doc_id}}, schema)
    for bad in ({"query": "x"}, {"doc_id": "not-a-document"}):  # ids are an enum of the corpus
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"name": "open", "arguments": bad}, schema)
    with pytest.raises(jsonschema.ValidationError):  # a copy loop cannot grow a query past its bound
        jsonschema.validate({"name": "search", "arguments": {"query": "ab" * 101}}, schema)
    with pytest.raises(jsonschema.ValidationError):  # an empty answer is never an answer
        jsonschema.validate({"name": "answer", "arguments": {"text": ""}}, schema)


def test_tools_turn_errors_into_observations(env, tmp_path):
    search, open_, answer = env.tools()
    assert search({"query": "serialize JSON"}).text.startswith("json.dumps")
    assert search({"query": "zzzz qqqq"}).text == "no results"
    assert "no document" in open_({"doc_id": "nope"}).text
    assert answer({"text": "x"}).final
    boom = type(search)("boom", "", {"type": "object"}, fn=lambda: 1 / 0)
    obs = boom({})
    assert obs.error and "ZeroDivisionError" in obs.text
    # the BM25 index is cached on disk and reloads
    again = BM25Index(DOCS, tmp_path)
    assert again.search("join pathname", 1)[0][0] == 2


def test_python_tool_runs_in_the_sandbox():
    obs = python_tool(timeout_s=5)({"code": "print(6 * 7)"})
    assert "42" in obs.text and obs.text.startswith("[ok]")
    assert "[timeout]" in python_tool(timeout_s=1)({"code": "while True: pass"}).text


def test_render_parse_roundtrip():
    turns = [Turn("system", "s"), Turn("user", "q?"), Turn("assistant", "<think>t</think>a"), Turn("tool", "o")]
    assert parse_rendered(render_text(turns, add_generation_prompt=True)) == turns


def test_loop_with_oracle_policy_logs_and_scores(env, tiny_tokenizer, tmp_path):
    script = iter([
        format_action("search", {"query": "json dumps"}),
        '<tool_call>{"name": "open", "arguments": {"doc_id": 7}}</tool_call>',  # schema violation, recovered
        format_action("open", {"doc_id": "json.dumps"}),
        format_action("answer", {"text": "None"}),
    ])
    seen_turns = []

    def act(turns):
        seen_turns.append(len(turns))
        return next(script)

    log = tmp_path / "log.jsonl"
    [rec] = run_episodes(env, env.tasks("test"), ScriptedPolicy(act, tiny_tokenizer), LoopConfig(), log_path=log,
                         progress=False)
    assert rec["outcome"] == "answered" and rec["em"] == 1.0 and rec["prediction"] == "None"
    assert rec["rounds"] == 4 and rec["tool_calls"] == 3
    assert rec["failures"] == {"schema_violation": 1}
    assert seen_turns == [2, 4, 6, 8]  # each action sees every earlier observation
    assert json.loads(log.read_text())["task_id"] == "t1"


class MultiTaskEnv(TinyEnv):
    def tasks(self, split):
        return [Task(f"t{i}", f"Where is {d['id']}?", d["id"]) for i, d in enumerate(DOCS * 2)]


def test_paired_episodes_interleave_arms_and_match_separate_runs(tmp_path, tiny_tokenizer):
    env = MultiTaskEnv(tmp_path)
    calls = []

    def policy(label, answer_right):
        def act(turns):
            calls.append((label, turns[1].content))
            q = turns[1].content.split()[-1].rstrip("?")
            return format_action("answer", {"text": q if answer_right else "no idea"})
        return ScriptedPolicy(act, tiny_tokenizer)

    arms = {"A": policy("A", True), "B": policy("B", False)}
    logs = {"A": tmp_path / "a.jsonl", "B": tmp_path / "b.jsonl"}
    paired = run_paired_episodes(env, env.tasks("test"), arms, LoopConfig(), logs, progress=False)
    order = [label for label, _ in calls]
    assert order == ["A", "B", "B", "A", "A", "B", "B", "A", "A", "B", "B", "A"]  # the order rotates per task
    for label, backbone in arms.items():
        alone = run_episodes(env, env.tasks("test"), backbone, LoopConfig(), progress=False)
        strip = [{k: v for k, v in r.items() if not k.endswith("time") and k != "round_log"} for r in alone]
        assert [{k: v for k, v in r.items() if not k.endswith("time") and k != "round_log"}
                for r in paired[label]] == strip
        assert [json.loads(x)["task_id"] for x in logs[label].read_text().splitlines()] == [r["task_id"] for r in alone]
    assert [r["em"] for r in paired["A"]] == [1.0] * 6 and [r["em"] for r in paired["B"]] == [0.0] * 6


def test_round_cap_and_budget(env, tiny_tokenizer):
    loop = LoopConfig(max_rounds=3)
    [rec] = run_episodes(env, env.tasks("test"), ScriptedPolicy(lambda t: "hmm", tiny_tokenizer), loop,
                         progress=False)
    assert rec["outcome"] == "round_cap" and rec["rounds"] == 3 and rec["failures"] == {"no_call": 3}
    tight = LoopConfig(max_context_tokens=20, max_new_tokens=4)
    [rec] = run_episodes(env, env.tasks("test"), ScriptedPolicy(lambda t: "hmm", tiny_tokenizer), tight,
                         progress=False)
    assert rec["outcome"] == "budget_exceeded" and rec["failures"]["budget_exceeded"] == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outputs=st.lists(st.one_of(
    st.text(max_size=60),
    st.builds(lambda n, a: f'<tool_call>{{"name": "{n}", "arguments": {a}}}</tool_call>',
              st.sampled_from(["search", "open", "answer", "x", ""]),
              st.sampled_from(["{}", '{"query": ""}', '{"doc_id": "json.loads"}', '{"text": 1}', "[", "null",
                               '{"query": "json", "k": 99}'])),
), min_size=1, max_size=6))
def test_fuzz_loop_never_crashes(env, tiny_tokenizer, outputs):
    it = iter(outputs)
    policy = ScriptedPolicy(lambda turns: next(it, "give up"), tiny_tokenizer)
    [rec] = run_episodes(env, env.tasks("test"), policy, LoopConfig(max_rounds=len(outputs) + 1), progress=False)
    assert rec["outcome"] in {"answered", "round_cap", "budget_exceeded", "error"}
    assert rec["rounds"] >= 1
    assert sum(rec["failures"].values()) + rec["tool_calls"] >= rec["rounds"]
    assert all(f in {x.value for x in Failure} for f in rec["failures"])
