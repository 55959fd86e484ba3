"""`habitloop buffer ...`: the short-term episode buffer (stats, list, show, discard)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.cli.resources import episode_buffer
from agent.config import Settings
from skills.errors import UserError

buffer_app = typer.Typer(help="The short-term episode buffer (chromadb under $HABITLOOP_HOME/buffer).")


def _episode_row(t: Any) -> dict[str, Any]:
    return {
        "id": t.id,
        "task": t.task,
        "status": t.outcome.status,
        "judged_by": t.outcome.judged_by,
        "skills": [f"{s.name}@{s.revision}" for s in t.skills],
        "consolidated_into": t.consolidated_into,
        "started_at": t.started_at.isoformat(),
        "answer": t.answer,
    }


@buffer_app.command("stats")
def buffer_stats(as_json: JsonFlag = False) -> None:
    """Counts: episodes by outcome, consolidated or waiting."""
    stats = episode_buffer(Settings()).stats()
    if as_json:
        output.print_json(stats.model_dump(mode="json"))
        return
    table = Table(show_header=False, title="episode buffer")
    for key, value in stats.model_dump().items():
        table.add_row(key, str(value))
    output.console.print(table)


@buffer_app.command("list")
def buffer_list(
    status: Annotated[str | None, typer.Option(help="success, failure or unknown")] = None,
    skill: Annotated[str | None, typer.Option(help="episodes that ran with this skill")] = None,
    consolidated: Annotated[bool | None, typer.Option("--consolidated/--waiting", help="filter by state")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Episodes, newest first."""
    if status not in (None, "success", "failure", "unknown"):
        raise UserError(f"unknown status {status!r}", hint="use success, failure or unknown")
    episodes = episode_buffer(Settings()).list(status=status, skill=skill, consolidated=consolidated, limit=limit)
    if as_json:
        output.print_json({"episodes": [_episode_row(t) for t in episodes]})
        return
    table = Table(title=f"{len(episodes)} episodes")
    for column in ("id", "status", "skills", "consolidated", "task"):
        table.add_column(column)
    for t in episodes:
        table.add_row(
            t.id[:12], t.outcome.status, ", ".join(s.name for s in t.skills), t.consolidated_into or "", t.task[:70]
        )
    output.console.print(table)


@buffer_app.command("show")
def buffer_show(episode_id: str, as_json: JsonFlag = False) -> None:
    """One episode: every message and step."""
    buffer = episode_buffer(Settings())
    matches = [t.id for t in buffer.list() if t.id.startswith(episode_id)] if len(episode_id) < 32 else [episode_id]
    if len(matches) != 1:
        raise UserError(f"{len(matches)} episodes match {episode_id!r}", hint="give more of the id")
    trajectory = buffer.get(matches[0])
    if as_json:
        output.print_json(trajectory.model_dump(mode="json"))
        return
    output.console.print(_episode_row(trajectory))
    for step in trajectory.steps:
        output.console.print(output.step_line(step))


@buffer_app.command("discard")
def buffer_discard(
    episode_ids: Annotated[list[str], typer.Argument(help="ids to delete")],
    as_json: JsonFlag = False,
) -> None:
    """Delete episodes (successes included: this is how a user lets one go before consolidation)."""
    removed = episode_buffer(Settings()).discard(episode_ids)
    if as_json:
        output.print_json({"discarded": removed})
    else:
        output.console.print(f"discarded {len(removed)} of {len(episode_ids)}")
