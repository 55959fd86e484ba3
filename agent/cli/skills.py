"""`habitloop skills ...`: list, show, history, rollback, delete, export and import the skills in the store
(`learn-style` joins the group from `agent/cli/style.py`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.cli.resources import skill_store
from agent.cli.text import terminal_text
from agent.config import Settings

skills_app = typer.Typer(help="Skills in the store ($HABITLOOP_HOME/skills).")


@skills_app.command("list")
def skills_list(as_json: JsonFlag = False) -> None:
    """List the skills in the store (and any that cannot be read, with the reason; and the tombstones of forgotten
    skills)."""
    store = skill_store(Settings())
    scan = store.scan()
    if as_json:
        output.print_json(
            {
                "skills": [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "current": s.current,
                        "revisions": s.revision_numbers(),
                        "description": s.description,
                        "tags": list(s.tags),
                        "base_fingerprint": s.base_fingerprint,
                        "updated_at": s.updated_at.isoformat(),
                    }
                    for s in scan.skills
                ],
                "problems": [p.model_dump() for p in scan.problems],
                "forgotten": [t.model_dump(mode="json") for t in store.forgotten_skills()],
            }
        )
        return
    if not scan.skills and not scan.problems:
        output.console.print(f"No skills yet in {Settings().skills_dir}.")
        return
    table = Table(title=f"skills in {Settings().skills_dir}")
    for column in ("name", "kind", "current", "revisions", "description"):
        table.add_column(column)
    for s in scan.skills:
        table.add_row(s.name, s.kind, str(s.current), str(len(s.revision_numbers())), terminal_text(s.description))
    output.console.print(table)
    for problem in scan.problems:
        output.err_console.print(
            f"[red]unreadable:[/red] {terminal_text(problem.name)}: {terminal_text(problem.error)}"
        )


@skills_app.command("show")
def skills_show(name: str, as_json: JsonFlag = False) -> None:
    """Show a skill's manifest and its current revision (provenance, evaluation, size)."""
    store = skill_store(Settings())
    manifest = store.get(name)
    revision = store.revision(name)
    if as_json:
        output.print_json({"manifest": manifest.model_dump(mode="json"), "revision": revision.model_dump(mode="json")})
        return
    table = Table(show_header=False, title=f"skill {name}")
    table.add_row("kind", terminal_text(manifest.kind))
    table.add_row("description", terminal_text(manifest.description))
    table.add_row("tags", terminal_text(", ".join(manifest.tags)))
    table.add_row("current", f"revision {manifest.current} of {manifest.revision_numbers()}")
    table.add_row("base", terminal_text(manifest.base_fingerprint))
    table.add_row(
        "lora", f"r={revision.lora.r} alpha={revision.lora.alpha} on {', '.join(revision.lora.target_modules)}"
    )
    table.add_row("size", f"{revision.size_bytes:,} bytes, {revision.trainable_params:,} parameters")
    table.add_row("provenance", f"{revision.provenance.source}, {revision.provenance.n_examples} examples")
    table.add_row("data", terminal_text(revision.provenance.data_hash))
    table.add_row("evaluation", terminal_text(json.dumps(revision.evaluation.metrics)))
    table.add_row("folder", str(store.revision_dir(name)))
    output.console.print(table)


@skills_app.command("history")
def skills_history(name: str, as_json: JsonFlag = False) -> None:
    """List a skill's revisions (promoted, rejected or forgotten) and pointer moves; a lost revision is listed with
    its problem, a forgotten one with its tombstone (when, why)."""
    store = skill_store(Settings())
    entries = store.history(name)
    manifest = store.get(name)
    if as_json:
        rows: list[dict[str, Any]] = []
        for e in entries:
            row: dict[str, Any] = {"number": e.number, "status": e.status, "current": e.current}
            if e.tombstone is not None:  # forgotten on purpose: when and why, nothing of what it held
                row |= {"forgotten_at": e.tombstone.at.isoformat(), "note": e.tombstone.note}
            elif e.revision is None:
                row["problem"] = e.problem
            else:
                row |= {
                    "parent": e.revision.parent,
                    "created_at": e.revision.created_at.isoformat(),
                    "source": e.revision.provenance.source,
                    "n_examples": e.revision.provenance.n_examples,
                    "metrics": e.revision.evaluation.metrics,
                }
            rows.append(row)
        output.print_json(
            {
                "name": name,
                "current": manifest.current,
                "revisions": rows,
                "events": [e.model_dump(mode="json") for e in manifest.history],
            }
        )
        return
    table = Table(title=f"history of {name}")
    for column in ("rev", "parent", "status", "created", "examples", "metrics"):
        table.add_column(column)
    for e in entries:
        marker = " *" if e.current else ""
        if e.tombstone is not None:
            when = e.tombstone.at.strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(str(e.number), "", "[dim]forgotten[/dim]", when, "", terminal_text(e.tombstone.note))
            continue
        if e.revision is None:
            table.add_row(f"{e.number}{marker}", "", f"[red]{e.status}, missing[/red]", "", "", "")
            continue
        table.add_row(
            f"{e.revision.number}{marker}",
            str(e.revision.parent or ""),
            e.status,
            e.revision.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(e.revision.provenance.n_examples),
            terminal_text(json.dumps(e.revision.evaluation.metrics)),
        )
    output.console.print(table)
    output.console.print("[dim]* current[/dim]")
    for e in entries:
        if e.problem is not None:
            output.err_console.print(f"[red]revision {e.number}:[/red] {escape(e.problem)}")


@skills_app.command("rollback")
def skills_rollback(
    name: str,
    to: Annotated[int | None, typer.Option("--to", help="revision to make current (default: the previous one)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Point a skill back to an earlier revision (nothing is deleted)."""
    manifest = skill_store(Settings()).rollback(name, to)
    if as_json:
        output.print_json({"name": name, "current": manifest.current})
    else:
        output.console.print(f"{name}: current revision is now {manifest.current}")


@skills_app.command("delete")
def skills_delete(
    name: str, yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False
) -> None:
    """Delete a skill and all its revisions (also one whose manifest is broken or missing)."""
    from skills.errors import SkillNotFoundError

    store = skill_store(Settings())
    folder = store.skill_dir(name)  # validated: never a path outside the store
    if not folder.exists() and not folder.is_symlink():
        raise SkillNotFoundError(f"no skill named {name!r} in {store.root}", hint="see `habitloop skills list`")
    if not yes and not typer.confirm(f"Delete skill {name!r} and all its revisions?"):
        raise typer.Exit(1)
    store.delete(name)
    output.console.print(f"deleted {name}")


@skills_app.command("export")
def skills_export(
    name: str,
    archive: Annotated[Path | None, typer.Option("--output", "-o", help="archive path (default: NAME.tar.gz)")] = None,
) -> None:
    """Write a skill with all its revisions to one .tar.gz (a lost revision is left out, and said so)."""
    store = skill_store(Settings())
    path = store.export(name, archive or Path(f"{name}.tar.gz"))
    lost = [e.number for e in store.history(name) if e.problem is not None]
    output.console.print(f"exported {name} to {path}")
    if lost:
        output.err_console.print(
            f"[yellow]left out:[/yellow] revisions {lost} (lost on disk; see `habitloop skills history`)"
        )


@skills_app.command("import")
def skills_import(
    archive: Path,
    replace: Annotated[bool, typer.Option("--replace", help="overwrite a skill of the same name")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Import a skill archive (checked: no links or '..' paths, safetensors only, same base model)."""
    manifest = skill_store(Settings(), with_base=True).import_archive(archive, replace=replace)
    if as_json:
        output.print_json(
            {"name": manifest.name, "current": manifest.current, "revisions": manifest.revision_numbers()}
        )
    else:
        output.console.print(f"imported {manifest.name} (revisions {manifest.revision_numbers()})")
