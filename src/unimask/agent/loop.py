"""The agent loop: action -> parse -> tool -> observation, until an answer or a budget ends it.

Episodes are run in lock-step batches: every live episode's next action comes from one
``Backbone.generate`` call. Each round records model time, tool time, NFE and tokens; each
episode ends with a classified outcome and a complete trajectory (JSONL-ready dict).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from unimask.agent.constraint import ToolCallConstraint
from unimask.agent.env import Environment, Task, exact_match, token_f1
from unimask.agent.protocol import Failure, parse_action, tool_call_schema
from unimask.sampling.backbone import Backbone
from unimask.sampling.constraint import Constraint
from unimask.tokenizer import special as sp
from unimask.tokenizer.chat import Turn, render_text

_log = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    max_rounds: int = 15  # the DLLM Agent paper's round cap
    max_new_tokens: int = 96  # per action
    max_context_tokens: int = 1024  # prompt budget; older rounds are dropped to fit
    max_total_tokens: int = 2048  # generated tokens per episode
    batch_size: int = 1  # episodes advanced together (1 = per-task latency is not shared)
    constrained: bool = False  # pass the tool-call schema constraint to generate
    decoding: dict[str, Any] = field(default_factory=dict)


class EpisodeRecord(TypedDict):
    """One finished episode: what ``run_episodes`` returns, each JSONL log line, what the report reads."""

    task_id: str
    question: str
    answer: str
    prediction: str | None
    outcome: str  # answered, round_cap, budget_exceeded, error
    em: float
    f1: float
    rounds: int
    tool_calls: int
    failures: dict[str, int]
    nfe: int
    tokens: int
    forced_tokens: int  # of ``tokens``, those the constraint forced (written without a pass)
    model_time: float
    tool_time: float
    wall_time: float
    meta: dict[str, Any]
    turns: list[dict[str, Any]]  # ``Turn.to_dict()`` of the whole trajectory
    round_log: list[dict[str, Any]]


@dataclass
class Episode:
    """An episode in flight; ``record`` turns it into its ``EpisodeRecord``."""

    task: Task
    turns: list[Turn]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    prediction: str | None = None
    outcome: str = "running"
    failures: Counter[str] = field(default_factory=Counter)
    start: float = field(default_factory=time.perf_counter)
    wall_time: float = 0.0

    @property
    def done(self) -> bool:
        return self.outcome != "running"

    def record(self, env: Environment) -> EpisodeRecord:
        score = env.score(self.task, self.prediction)
        return {
            "task_id": self.task.id,
            "question": self.task.question,
            "answer": self.task.answer,
            "prediction": self.prediction,
            "outcome": self.outcome,
            "em": score.get("em", exact_match(self.prediction, self.task.answer)),
            "f1": score.get("f1", token_f1(self.prediction, self.task.answer)),
            "rounds": len(self.rounds),
            "tool_calls": sum(1 for r in self.rounds if r["failure"] is None),
            "failures": dict(self.failures),
            "nfe": sum(r["nfe"] for r in self.rounds),
            "tokens": sum(r["tokens"] for r in self.rounds),
            "forced_tokens": sum(r.get("forced_tokens", 0) for r in self.rounds),
            "model_time": sum(r["model_time"] for r in self.rounds),
            "tool_time": sum(r["tool_time"] for r in self.rounds),
            "wall_time": self.wall_time,
            "meta": self.task.meta,
            "turns": [t.to_dict() for t in self.turns],
            "round_log": self.rounds,
        }


def _fit_context(turns: list[Turn], backbone: Backbone, budget: int) -> str | None:
    """Render the prompt, dropping the oldest action/observation pairs until it fits."""
    turns = list(turns)
    while True:
        prompt = render_text(turns, add_generation_prompt=True)
        if len(backbone.tokenizer.encode_prompt(prompt)) <= budget:
            return prompt
        # keep system + user (first two) and the latest pair; drop the oldest pair after them
        if len(turns) <= 4:
            return None
        del turns[2:4]


def run_episodes(
    env: Environment,
    tasks: Sequence[Task],
    backbone: Backbone,
    config: LoopConfig | None = None,
    log_path: str | Path | None = None,
    progress: bool = True,
) -> list[EpisodeRecord]:
    """Run every task to completion; returns one record per task (in task order)."""
    logs = {backbone.kind: log_path} if log_path else None
    return run_paired_episodes(env, tasks, {backbone.kind: backbone}, config, logs, progress)[backbone.kind]


def run_paired_episodes(
    env: Environment,
    tasks: Sequence[Task],
    backbones: Mapping[str, Backbone],
    config: LoopConfig | None = None,
    log_paths: Mapping[str, str | Path] | None = None,
    progress: bool = True,
) -> dict[str, list[EpisodeRecord]]:
    """Run every task with every backbone, interleaved: each batch of tasks is run by every arm
    in turn, the order rotating from batch to batch, so that whatever else loads the machine
    loads every arm alike and their wall times can be compared task by task. Returns, per arm
    label, one record per task (in task order); an episode's record does not depend on the
    interleaving."""
    cfg = config or LoopConfig()
    tools = env.tools()
    by_name = {t.name: t for t in tools}
    constraint = ToolCallConstraint(tool_call_schema(tools)) if cfg.constrained else None
    system = env.system_prompt()
    labels = list(backbones)
    records: dict[str, list[EpisodeRecord]] = {label: [] for label in labels}
    logs = {label: open(path, "a", encoding="utf-8") for label, path in (log_paths or {}).items()}  # noqa: SIM115
    bar = None
    if progress:
        bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), transient=True)
        bar.start()
        bar_id = bar.add_task(f"{env.name}/{'+'.join(labels)}", total=len(tasks) * len(labels))
    try:
        for b, lo in enumerate(range(0, len(tasks), cfg.batch_size)):
            for label in labels[b % len(labels):] + labels[: b % len(labels)]:
                batch = [Episode(t, [Turn("system", system), Turn("user", t.question)])
                         for t in tasks[lo : lo + cfg.batch_size]]
                while live := [e for e in batch if not e.done]:
                    _round(live, backbones[label], by_name, cfg, constraint)
                for e in batch:
                    rec = e.record(env)
                    records[label].append(rec)
                    if label in logs:
                        logs[label].write(json.dumps(rec, default=str) + "\n")
                        logs[label].flush()
                    if bar:
                        bar.advance(bar_id)
            done = min(lo + cfg.batch_size, len(tasks))
            if not bar and done * 10 // len(tasks) > lo * 10 // len(tasks):  # every tenth
                ems = ", ".join(f"{label} {100 * sum(r['em'] for r in recs) / done:.1f}%"
                                for label, recs in records.items())
                _log.info("%s: %d/%d tasks, EM so far: %s", env.name, done, len(tasks), ems)
    finally:
        if bar:
            bar.stop()
        for f in logs.values():
            f.close()
    return records


def _round(live: list[Episode], backbone: Backbone, tools: dict[str, Any], cfg: LoopConfig,
           constraint: Constraint | None) -> None:
    prompts, ready = [], []
    for e in live:
        used = sum(r["tokens"] for r in e.rounds)
        prompt = _fit_context(e.turns, backbone, cfg.max_context_tokens - cfg.max_new_tokens)
        if prompt is None or used >= cfg.max_total_tokens or len(e.rounds) >= cfg.max_rounds:
            e.outcome = "round_cap" if len(e.rounds) >= cfg.max_rounds else "budget_exceeded"
            if e.outcome == "budget_exceeded":
                e.failures[Failure.BUDGET_EXCEEDED.value] += 1
            e.wall_time = time.perf_counter() - e.start
            continue
        prompts.append(prompt)
        ready.append(e)
    if not ready:
        return
    t0 = time.perf_counter()
    try:
        gens = backbone.generate(prompts, max_new_tokens=cfg.max_new_tokens, stop=[sp.END_OF_TURN],
                                 constraint=constraint, **cfg.decoding)
    except ValueError as e:  # e.g. context overflow: the episodes end, the run goes on
        for ep in ready:
            ep.outcome = "error"
            ep.failures[Failure.BUDGET_EXCEEDED.value] += 1
            ep.rounds.append({"action": "", "failure": Failure.BUDGET_EXCEEDED.value, "detail": str(e),
                              "nfe": 0, "tokens": 0, "model_time": 0.0, "tool_time": 0.0})
            ep.wall_time = time.perf_counter() - ep.start
        return
    model_time = time.perf_counter() - t0
    for e, g in zip(ready, gens, strict=True):
        text = g.text.split(sp.END_OF_TURN, 1)[0]
        parsed = parse_action(text, list(tools.values()))
        t1 = time.perf_counter()
        failure = parsed.failure
        if parsed.ok:
            obs = tools[parsed.name](parsed.arguments)
            if obs.error:
                failure = Failure.TOOL_ERROR
            observation = obs.text
            if obs.final:
                e.prediction = obs.text
                e.outcome = "answered"
        else:
            observation = f"error: {parsed.failure.value}: {parsed.detail}"
        tool_time = time.perf_counter() - t1
        if failure is not None:
            e.failures[failure.value] += 1
        e.rounds.append({"action": text, "tool": parsed.name, "arguments": parsed.arguments,
                         "failure": failure.value if failure else None, "observation": observation,
                         "nfe": g.nfe, "tokens": len(g.token_ids),
                         "forced_tokens": int(g.info.get("forced_tokens", 0)), "model_time": model_time,
                         "tool_time": tool_time})
        e.turns.append(Turn("assistant", text))
        if e.done:
            e.wall_time = time.perf_counter() - e.start
        else:
            e.turns.append(Turn("tool", observation))
