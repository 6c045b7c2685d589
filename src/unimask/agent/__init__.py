"""The agent runtime: tool protocol, tools, environments, the loop and scripted policies."""

from unimask.agent.constraint import ToolCallConstraint
from unimask.agent.env import Environment, Task, exact_match, token_f1
from unimask.agent.loop import EpisodeRecord, LoopConfig, run_episodes, run_paired_episodes
from unimask.agent.policy import ScriptedPolicy
from unimask.agent.protocol import Failure, format_action, parse_action, system_prompt, tool_call_schema
from unimask.agent.tools import Observation, Tool

__all__ = [
    "Environment", "EpisodeRecord", "Failure", "LoopConfig", "Observation", "ScriptedPolicy", "Task", "Tool", "ToolCallConstraint",
    "exact_match",
    "format_action", "parse_action", "run_episodes", "run_paired_episodes", "system_prompt", "token_f1",
    "tool_call_schema",
]
