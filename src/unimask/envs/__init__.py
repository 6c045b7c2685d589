"""unimask.envs: agent environments (tasks, tools, scoring) and the registry that finds them by name."""

from __future__ import annotations

from typing import Any

from unimask.agent.env import Environment
from unimask.envs.docqa import DocQAEnvironment

ENVIRONMENTS: dict[str, type] = {"docqa": DocQAEnvironment}


def get_environment(name: str, **kwargs: Any) -> Environment:
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {name!r}; available: {sorted(ENVIRONMENTS)}")
    return ENVIRONMENTS[name](**kwargs)
