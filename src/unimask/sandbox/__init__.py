"""Sandboxed execution of untrusted Python, shared by the evals (HumanEval) and the agent's
``python`` tool: ``runner`` (the harness side), ``child`` (the program run inside), ``check``
(``unimask eval sandbox-check``'s self-test)."""

from unimask.sandbox.runner import SandboxLimits, SandboxResult, default_workers, run_many, run_python

__all__ = ["SandboxLimits", "SandboxResult", "default_workers", "run_many", "run_python"]
