"""`habitloop forget`: episodes leave the buffer and the weights (see `memory.forget`).

A root command: `agent/cli/app.py` registers it with one line. Without `--yes` it shows the plan and asks; with
`--json` and without `--yes` it is a dry run that prints the plan and changes nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.config import Settings
from memory.forget import ForgetReport


def open_agent(instance: str | None) -> Any:
    """The agent forgetting runs in (a seam for tests: the real one loads the base)."""
    from agent.api import Agent

    return Agent(settings=Settings(), instance=instance)


def forget(
    instance: Annotated[
        str | None, typer.Option("--instance", help="whose episodes (default: the shared agent)")
    ] = None,
    episode: Annotated[list[str] | None, typer.Option("--episode", help="an episode id to forget (repeatable)")] = None,
    match: Annotated[str | None, typer.Option("--match", help="forget every episode whose text contains this")] = None,
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the tombstones; never the content)")] = "",
    yes: Annotated[bool, typer.Option("--yes", help="do it without asking")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Forget episodes: they leave the buffer (their threads too), and every skill revision trained on them (or on a
    revision that was) is deleted from disk and replaced by one retrained, from the last revision without them, on
    the rest. History keeps a tombstone (which revision, when, why), never the content. An archive written by
    `habitloop skills export` to a path of your own cannot be recalled: delete it yourself (docs/forgetting.md)."""
    agent = open_agent(instance)
    if not yes:
        planned = agent.forget(episode or (), match=match, dry_run=True)
        if as_json:
            output.print_json(planned.model_dump(mode="json"))
            return
        show(planned)
        if not typer.confirm("Forget these episodes and delete these revisions?", default=False):
            raise typer.Abort()
    report = agent.forget(episode or (), match=match, reason=reason)
    if as_json:
        output.print_json(report.model_dump(mode="json"))
        return
    show(report)


def show(report: ForgetReport) -> None:
    """The plan (dry run) or what was done, one line per skill."""
    verb = "would forget" if report.dry_run else "forgot"
    output.console.print(f"{verb} {len(report.episodes)} episodes: {escape(', '.join(report.episodes))}")
    for s in report.skills:
        deleted = ", ".join(str(n) for n in s.revisions_deleted)
        line = f"  {escape(s.skill)}: revisions {deleted} deleted"
        if s.action == "rebuild":
            target = f" as revision {s.new_revision}" if s.new_revision else ""
            line += f"; rebuilt{target} on {len(s.retrained_on)} remaining episodes"
        elif s.action == "restore":
            line += f"; back to revision {s.restored_to}"
        elif s.action == "delete":
            line += "; the whole skill is deleted (a tombstone stays)"
        if s.missing:
            line += f"; {len(s.missing)} episodes no longer in the buffer cannot be retrained on"
        output.console.print(line)
    if not report.skills:
        output.console.print("  no skill revision holds them")
