"""``unimask env build docqa`` and ``unimask env sample docqa``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import typer
from rich.panel import Panel
from rich.table import Table

from unimask.agent.loop import LoopConfig, run_episodes
from unimask.agent.policy import ScriptedPolicy
from unimask.cli.common import console, friendly_errors
from unimask.envs.docqa import ByteTokenizer, DocQAEnvironment, build_dataset, oracle_action
from unimask.tokenizer import Tokenizer

env_app = typer.Typer(help="Agent environments: build corpora/questions/oracle trajectories, inspect them.")

_CACHE = os.environ.get("UNIMASK_CACHE", str(Path.home() / ".cache" / "unimask"))


def _env(name: str, cache_dir: str, difficulty: str):
    if name != "docqa":
        raise typer.BadParameter(f"unknown environment {name!r}; available: docqa")
    return DocQAEnvironment(cache_dir=cache_dir, difficulty=difficulty)


def _tokenizer(path: str | None):
    if path is None:
        return None  # the oracle then counts UTF-8 bytes (trajectories are text; token ids are not stored)
    return Tokenizer.load(path)


@env_app.command("build")
def build(
    name: str = typer.Argument("docqa", help="environment name"),
    out: Path = typer.Option(Path("data/docqa"), help="where train/val/test.jsonl and report.json go"),
    tokenizer: str = typer.Option(None, help="tokenizer.json (or checkpoint dir) used to render turns"),
    cache_dir: str = typer.Option(_CACHE, help="corpus and BM25 index cache"),
    difficulty: str = typer.Option("full", help="task mix: easy or full"),
    recovery_rate: float = typer.Option(0.1, help="fraction of oracle episodes with a missed query + retry"),
    seed: int = typer.Option(0),
) -> None:
    """Build the corpus, questions and oracle trajectories; print oracle vs trivial-baseline metrics."""
    with friendly_errors():
        env = _env(name, cache_dir, difficulty)
        report = build_dataset(env, out, _tokenizer(tokenizer), recovery_rate=recovery_rate, seed=seed)
        table = Table(title=f"{name} ({difficulty}) -> {out}")
        for col in ("split", "n", "oracle EM", "oracle F1", "trivial EM"):
            table.add_column(col)
        for split, r in report["splits"].items():
            table.add_row(split, str(r["n"]), f"{r['oracle_em']:.3f}", f"{r['oracle_f1']:.3f}",
                          f"{r['trivial']['em']:.3f}")
        console.print(table)


@env_app.command("sample")
def sample(
    name: str = typer.Argument("docqa", help="environment name"),
    n: int = typer.Option(5, "--n", "-n", help="questions to show"),
    split: str = typer.Option("train"),
    tokenizer: str = typer.Option(None, help="tokenizer.json (or checkpoint dir) for token counts"),
    cache_dir: str = typer.Option(_CACHE),
    difficulty: str = typer.Option("full"),
    recovery_rate: float = typer.Option(0.1),
    seed: int = typer.Option(0),
) -> None:
    """Show N questions (type, hops, gold) and an oracle trajectory."""
    with friendly_errors():
        env = _env(name, cache_dir, difficulty)
        tasks = env.tasks(split)
        if not tasks:
            raise typer.BadParameter(f"no {split} tasks for difficulty {difficulty!r}")
        pick = np.random.default_rng(seed).choice(len(tasks), size=min(n, len(tasks)), replace=False)
        table = Table(title=f"{name}/{split}: {len(tasks)} questions")
        for col in ("id", "type", "hops", "question", "answer"):
            table.add_column(col)
        chosen = [tasks[int(i)] for i in pick]
        for t in chosen:
            table.add_row(t.id, t.meta["type"], str(t.meta["hops"]), t.question, t.answer)
        console.print(table)
        if chosen:
            rng = np.random.default_rng(seed)
            task = chosen[0]
            policy = ScriptedPolicy(lambda turns: oracle_action(env, task, turns, rng, recovery_rate),
                                    _tokenizer(tokenizer) or ByteTokenizer())
            rec = run_episodes(env, [task], policy, LoopConfig(max_rounds=6, max_context_tokens=100_000),
                               progress=False)[0]
            for turn in rec["turns"][1:]:
                console.print(Panel(turn["content"], title=turn["role"], expand=False))
            console.print(f"prediction={rec['prediction']!r} gold={rec['answer']!r} em={rec['em']}")

