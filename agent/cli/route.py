"""`habitloop route "TASK"`: which skills the router would choose, and why, without loading the base model.

A root command: `agent/cli/app.py` registers it with one line.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

import agent.cli.output as output
import agent.cli.resources as resources
from agent.cli.output import JsonFlag
from agent.config import Settings


def route(
    task: str,
    top_k: Annotated[int | None, typer.Option("--top-k", min=0, help="skills chosen at most, besides pinned")] = None,
    threshold: Annotated[float | None, typer.Option(help="lowest similarity a chosen skill may have")] = None,
    pin: Annotated[list[str] | None, typer.Option("--pin", help="skill always chosen (repeatable)")] = None,
    floor: Annotated[float | None, typer.Option(help="list candidates scoring at least this")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show the skills a run of TASK would use (score, threshold, reason) and the best candidates' scores."""
    from agent.router import Router
    from skills.store import SkillStore

    settings = Settings()
    if settings.threads:  # as the agent does when it loads the base: one short text is fastest on few threads
        import torch

        torch.set_num_threads(settings.threads)
    router = Router(
        SkillStore(settings.skills_dir),
        resources.embedder(),
        top_k=settings.route_top_k if top_k is None else top_k,
        threshold=settings.route_threshold if threshold is None else threshold,
        pinned=settings.route_pinned if pin is None else pin,
    )
    decision = router.decide(task, floor=floor)
    if as_json:
        output.print_json(decision.model_dump(mode="json"))
        return
    if not decision.skills_indexed:
        output.console.print(f"No skills in {settings.skills_dir}: a run of this task would use the base alone.")
        return
    table = Table(title=f"route: top {decision.top_k}, threshold {decision.threshold:g}, {decision.embedder}")
    for column in ("skill", "revision", "score", "description", "centroid", "chosen"):
        table.add_column(column)
    reasons = {c.name: c.reason for c in decision.choices}
    for c in decision.candidates:
        centroid = "-" if c.centroid_score is None else f"{c.centroid_score:.3f}"
        chosen = f"[green]{reasons[c.name]}[/green]" if c.name in reasons else ""
        table.add_row(c.name, str(c.revision), f"{c.score:.3f}", f"{c.description_score:.3f}", centroid, chosen)
    listed = {c.name for c in decision.candidates}
    for choice in decision.choices:  # a pinned skill scoring below the floor is still shown
        if choice.name not in listed:
            centroid = "-" if choice.centroid_score is None else f"{choice.centroid_score:.3f}"
            table.add_row(
                choice.name,
                str(choice.revision),
                f"{choice.score:.3f}",
                f"{choice.description_score:.3f}",
                centroid,
                f"[green]{choice.reason}[/green]",
            )
    table.caption = (
        f"{decision.skills_indexed} skills scored, candidates >= {decision.floor:g}; "
        f"embed {decision.embed_ms:.1f} ms, score {decision.score_ms:.1f} ms"
    )
    output.console.print(table)
    if not decision.choices:
        output.console.print("No skill scores above the threshold: a run of this task would use the base alone.")
