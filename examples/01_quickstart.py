"""Quickstart: the agent on the real base, with the built-in calculator, on one task; prints the trajectory.

    python examples/01_quickstart.py ["your task"]

The 135M-parameter base often answers arithmetic in prose, and sometimes wrongly, instead of calling the tool:
that is what skills are for (`habitloop demo` trains one). Whatever happens is printed, not faked.
"""

from __future__ import annotations

import sys

from agent import Agent

task = sys.argv[1] if len(sys.argv) > 1 else "What is 17*23? Use the calculator."
agent = Agent(max_steps=4)  # the shared base, the skill store, built-in tools, SQLite threads: all defaults


def correct(task: str, answer: str | None, trajectory: object) -> bool:
    return "391" in (answer or "")


for step in agent.stream(task, checker=correct if "17*23" in task else None):
    detail = f"{step.tool}({step.arguments})" if step.kind == "tool_call" else step.text
    print(f"{step.kind:>12}: {detail}")

result = agent.last_result
print(f"\nanswer:  {result.answer!r}")
print(f"outcome: {result.outcome.status} (judged by {result.outcome.judged_by})")
print(f"tokens:  {result.trajectory.prompt_tokens} prompt + {result.trajectory.completion_tokens} generated")
print(f"thread:  {result.thread_id}  (continue it with: habitloop run '...' --thread {result.thread_id})")
