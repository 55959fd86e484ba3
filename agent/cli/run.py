"""`habitloop run "TASK"` and `habitloop consolidate`: the agent acts, then learns from what it did.

Root commands (no group of their own): `agent/cli/app.py` registers each with one line.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.config import Settings


def run(
    task: str,
    skill: Annotated[list[str] | None, typer.Option("--skill", help="skill to activate (repeatable)")] = None,
    tools: Annotated[list[str] | None, typer.Option("--tools", help="extra tools as module:attr (repeatable)")] = None,
    thread: Annotated[str | None, typer.Option("--thread", help="thread id to continue (or start)")] = None,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="model calls at most")] = 6,
    route: Annotated[bool, typer.Option(help="without --skill, let the router choose skills")] = True,
    instance: Annotated[str | None, typer.Option("--instance", help="run as this personal instance (user)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one task with the agent on the shared base: built-in tools (calculator, workspace files) plus --tools."""
    from agent.api import Agent
    from agent.cli.resources import load_tools
    from tools import builtin_tools

    extra = [item for spec in tools or [] for item in load_tools(spec)]
    agent = Agent(settings=Settings(), tools=[*builtin_tools(), *extra], max_steps=max_steps, instance=instance)
    for step in agent.stream(task, skills=skill or [], thread_id=thread, route=route):
        if not as_json:
            output.console.print(output.step_line(step))
    result = agent.last_result
    if as_json:
        trajectory = result.trajectory
        output.print_json(
            {
                "run_id": result.run_id,
                "thread_id": result.thread_id,
                "answer": result.answer,
                "outcome": result.outcome.model_dump(mode="json"),
                "skills": [s.model_dump(mode="json") for s in trajectory.skills],
                "steps": [s.model_dump(mode="json") for s in trajectory.steps],
                "prompt_tokens": trajectory.prompt_tokens,
                "completion_tokens": trajectory.completion_tokens,
                "seconds": round(trajectory.seconds, 3),
            }
        )
        return
    output.console.print(
        f"[dim]outcome: {result.outcome.status} ({result.outcome.judged_by}) · thread {result.thread_id} · "
        f"{result.trajectory.prompt_tokens}+{result.trajectory.completion_tokens} tokens · "
        f"{result.trajectory.seconds:.1f} s[/dim]"
    )


def consolidate(
    skill: Annotated[str | None, typer.Option(help="consolidate into this skill only")] = None,
    min_episodes: Annotated[int | None, typer.Option("--min-episodes", min=1, help="successes needed")] = None,
    instance: Annotated[str | None, typer.Option("--instance", help="this personal instance (user)")] = None,
    facts: Annotated[
        bool, typer.Option("--facts", help="learn what the user said into their memory adapter (memory.facts)")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Train waiting successful episodes into skills: a new revision each, promoted only if not worse.

    With --facts (and --instance U): what U said, as self-study question/answer pairs, into U's skill `memory`."""
    from agent.api import Agent

    agent = Agent(settings=Settings(), instance=instance)
    reports = agent.consolidate(skill, min_episodes=min_episodes, facts=facts)
    if as_json:
        output.print_json({"reports": [r.model_dump(mode="json") for r in reports]})
        return
    if not reports:
        waiting = "turns" if facts else "successes"
        output.console.print(f"Nothing to consolidate: not enough waiting {waiting} (see `habitloop buffer stats`).")
    for r in reports:
        if r.skipped:
            output.console.print(f"[yellow]skipped[/yellow] {escape(r.skill)}: {escape(r.reason)}")
            continue
        verdict = "[green]promoted[/green]" if r.promoted else "[red]rejected[/red]"
        output.console.print(
            f"{r.skill} revision {r.revision}: {verdict} ({r.reason}); {len(r.episodes)} episodes, "
            f"{r.train_seconds:.0f} s training at {r.train_tokens_per_second:.0f} tokens/s; report {r.report_path}"
        )
