"""`habitloop packs ...`: install, list, show, remove and create skill packs (see `skills.packs`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.cli.resources import skill_store
from agent.cli.text import terminal_text
from agent.config import Settings

packs_app = typer.Typer(help="Skill packs: skills (and tools) shipped together ($HABITLOOP_HOME/packs).")


def _row(pack: Any) -> dict[str, Any]:
    m = pack.manifest
    return {
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "license": m.license,
        "base_fingerprint": m.base_fingerprint,
        "skills": m.skill_names(),
        "tools": list(m.tools),
        "tasks": [t.model_dump(mode="json") for t in m.tasks],
        "trust_code": pack.trust_code,
        "source": pack.source,
        "installed_at": pack.installed_at.isoformat(),
        "created_skills": list(pack.created_skills),
        "shared_skills": pack.shared_skills,
        "path": pack.path,
    }


@packs_app.command("install")
def packs_install(
    path: Annotated[str, typer.Argument(help="a pack folder, a .tar.gz of one, or a built-in pack's name")],
    trust_code: Annotated[
        bool, typer.Option("--trust-code", help="allow the pack's tools (Python code) to be imported later")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Install a pack: its skills go into the store; nothing from it runs (tools only with --trust-code)."""
    from skills.packs import install_pack

    settings = Settings()
    pack = install_pack(path, skill_store(settings, True), settings.packs_dir, trust_code=trust_code)
    if as_json:
        output.print_json(_row(pack))
        return
    m = pack.manifest
    output.console.print(f"installed pack {m.name} {m.version}: skills {', '.join(m.skill_names()) or '-'}")
    if m.tools:
        state = "importable" if pack.trust_code else "NOT importable (installed without --trust-code)"
        output.console.print(f"tools {', '.join(m.tools)}: {state}")


@packs_app.command("list")
def packs_list(as_json: JsonFlag = False) -> None:
    """List installed packs (and the built-in ones that can be installed by name)."""
    from skills.packs import builtin_packs, list_packs

    settings = Settings()
    packs = list_packs(settings.packs_dir)
    builtin = sorted(builtin_packs())
    if as_json:
        output.print_json({"packs": [_row(p) for p in packs], "builtin": builtin})
        return
    if packs:
        table = Table(title=terminal_text(f"packs in {settings.packs_dir}"))
        for column in ("name", "version", "skills", "tools", "trusted", "description"):
            table.add_column(column)
        for p in packs:
            m = p.manifest
            table.add_row(
                m.name, m.version, ", ".join(m.skill_names()), ", ".join(m.tools), "yes" if p.trust_code else "no",
                terminal_text(m.description[:80]),
            )  # fmt: skip
        output.console.print(table)
    else:
        output.console.print(f"No packs installed in {settings.packs_dir}.")
    output.console.print(f"built-in packs: {', '.join(builtin) or '-'} (habitloop packs install NAME)")


@packs_app.command("show")
def packs_show(name: str, as_json: JsonFlag = False) -> None:
    """Show an installed pack: manifest, skills, tools, whether its code is trusted, example tasks."""
    from skills.packs import show

    pack = show(name, Settings().packs_dir)
    row = _row(pack)
    if as_json:
        output.print_json(row)
        return
    table = Table(show_header=False, title=f"pack {name}")
    for key, value in row.items():
        table.add_row(key, terminal_text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)))
    output.console.print(table)


@packs_app.command("remove")
def packs_remove(
    name: str,
    keep_skills: Annotated[bool, typer.Option("--keep-skills", help="leave its skills in the store")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Uninstall a pack and delete its skills (unless another pack carries them, they predate it, or they changed)."""
    from skills.packs import remove_pack

    settings = Settings()
    report = remove_pack(name, skill_store(settings, False), settings.packs_dir, keep_skills=keep_skills)
    if as_json:
        output.print_json(report.model_dump(mode="json"))
        return
    output.console.print(f"removed pack {name}; deleted skills: {', '.join(report.removed_skills) or '-'}")
    for skill, why in report.kept_skills.items():
        output.console.print(f"kept skill {skill}: {why}")


@packs_app.command("create")
def packs_create(
    name: str,
    destination: Annotated[Path, typer.Option("--output", "-o", help="a folder, or a .tar.gz archive")],
    skill: Annotated[list[str] | None, typer.Option("--skill", help="skill from the store (repeatable)")] = None,
    tools: Annotated[list[str] | None, typer.Option("--tools", help="tool module as module:attr (repeatable)")] = None,
    version: Annotated[str, typer.Option(help="the pack's version")] = "0.1.0",
    description: Annotated[str, typer.Option(help="what it does (and its measured effect)")] = "",
    license: Annotated[str, typer.Option("--license", help="SPDX license identifier")] = "Apache-2.0",
    as_json: JsonFlag = False,
) -> None:
    """Make a pack from skills in the store and tool modules (each a single .py file)."""
    from skills.packs import create_pack

    settings = Settings()
    store = skill_store(settings, with_base=not skill)  # without skills, the base fingerprint comes from the base
    path = create_pack(
        name,
        skill or [],
        tools or [],
        destination,
        store=store,
        version=version,
        description=description,
        license=license,
    )
    if as_json:
        output.print_json({"path": str(path), "name": name, "skills": skill or [], "tools": tools or []})
        return
    output.console.print(f"wrote pack {name} to {path}")
