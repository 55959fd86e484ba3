"""The `habitloop` command line: thin typed commands over the Python API, `--json` on every listing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.cli import route as cli_route
from agent.cli import serve as cli_serve
from agent.cli.bfcl import eval_app, practice_app
from agent.cli.packs import packs_app
from agent.cli.text import terminal_text
from agent.config import Settings
from skills.errors import HabitloopError, UserError

app = typer.Typer(help="habitloop: an agent whose skills live in LoRA adapters on one shared base model.")
model_app = typer.Typer(help="The shared base model.")
skills_app = typer.Typer(help="Skills in the store ($HABITLOOP_HOME/skills).")
buffer_app = typer.Typer(help="The short-term episode buffer (chromadb under $HABITLOOP_HOME/buffer).")
app.add_typer(model_app, name="model")
app.add_typer(skills_app, name="skills")
app.add_typer(buffer_app, name="buffer")
app.command("route")(cli_route.route)
app.command("serve")(cli_serve.serve)
app.command("bench-serve")(cli_serve.bench_serve)
app.add_typer(eval_app, name="eval")
app.add_typer(practice_app, name="practice")
app.add_typer(packs_app, name="packs")

console = Console()
err_console = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object for scripts")]


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def _store(with_base: bool = False) -> Any:
    """The skill store; with the base's fingerprint when the command must check it (loading the base, ~0.3 s)."""
    from skills.store import SkillStore

    settings = Settings()
    fingerprint = None
    if with_base:
        from agent.base import load_base

        fingerprint = load_base(settings=settings).fingerprint
    return SkillStore(settings.skills_dir, base_fingerprint=fingerprint)


# ------------------------------------------------------------------------------------------------------- model


@model_app.command("info")
def model_info(as_json: JsonFlag = False) -> None:
    """Load the base model and describe it (name, source, parameters, dtype, fingerprint, cache path, load time)."""
    from agent.base import load_base

    info = load_base(settings=Settings()).info()
    if as_json:
        _print_json(info.model_dump())
        return
    table = Table(show_header=False)
    for key, value in info.model_dump().items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)


# ------------------------------------------------------------------------------------------------------- skills


@skills_app.command("list")
def skills_list(as_json: JsonFlag = False) -> None:
    """List the skills in the store (and any that cannot be read, with the reason)."""
    scan = _store().scan()
    if as_json:
        _print_json(
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
            }
        )
        return
    if not scan.skills and not scan.problems:
        console.print(f"No skills yet in {Settings().skills_dir}.")
        return
    table = Table(title=f"skills in {Settings().skills_dir}")
    for column in ("name", "kind", "current", "revisions", "description"):
        table.add_column(column)
    for s in scan.skills:
        table.add_row(s.name, s.kind, str(s.current), str(len(s.revision_numbers())), terminal_text(s.description))
    console.print(table)
    for problem in scan.problems:
        err_console.print(f"[red]unreadable:[/red] {terminal_text(problem.name)}: {terminal_text(problem.error)}")


@skills_app.command("show")
def skills_show(name: str, as_json: JsonFlag = False) -> None:
    """Show a skill's manifest and its current revision (provenance, evaluation, size)."""
    store = _store()
    manifest = store.get(name)
    revision = store.revision(name)
    if as_json:
        _print_json({"manifest": manifest.model_dump(mode="json"), "revision": revision.model_dump(mode="json")})
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
    console.print(table)


@skills_app.command("history")
def skills_history(name: str, as_json: JsonFlag = False) -> None:
    """List a skill's revisions (promoted or rejected) and pointer moves; a lost revision is listed with its problem."""
    store = _store()
    entries = store.history(name)
    manifest = store.get(name)
    if as_json:
        rows: list[dict[str, Any]] = []
        for e in entries:
            row: dict[str, Any] = {"number": e.number, "status": e.status, "current": e.current}
            if e.revision is None:
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
        _print_json(
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
    console.print(table)
    console.print("[dim]* current[/dim]")
    for e in entries:
        if e.problem is not None:
            err_console.print(f"[red]revision {e.number}:[/red] {escape(e.problem)}")


@skills_app.command("rollback")
def skills_rollback(
    name: str,
    to: Annotated[int | None, typer.Option("--to", help="revision to make current (default: the previous one)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Point a skill back to an earlier revision (nothing is deleted)."""
    manifest = _store().rollback(name, to)
    if as_json:
        _print_json({"name": name, "current": manifest.current})
    else:
        console.print(f"{name}: current revision is now {manifest.current}")


@skills_app.command("delete")
def skills_delete(
    name: str, yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False
) -> None:
    """Delete a skill and all its revisions (also one whose manifest is broken or missing)."""
    from skills.errors import SkillNotFoundError

    store = _store()
    folder = store.skill_dir(name)  # validated: never a path outside the store
    if not folder.exists() and not folder.is_symlink():
        raise SkillNotFoundError(f"no skill named {name!r} in {store.root}", hint="see `habitloop skills list`")
    if not yes and not typer.confirm(f"Delete skill {name!r} and all its revisions?"):
        raise typer.Exit(1)
    store.delete(name)
    console.print(f"deleted {name}")


@skills_app.command("export")
def skills_export(
    name: str,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="archive path (default: NAME.tar.gz)")] = None,
) -> None:
    """Write a skill with all its revisions to one .tar.gz (a lost revision is left out, and said so)."""
    store = _store()
    path = store.export(name, output or Path(f"{name}.tar.gz"))
    lost = [e.number for e in store.history(name) if e.problem is not None]
    console.print(f"exported {name} to {path}")
    if lost:
        err_console.print(f"[yellow]left out:[/yellow] revisions {lost} (lost on disk; see `habitloop skills history`)")


@skills_app.command("import")
def skills_import(
    archive: Path,
    replace: Annotated[bool, typer.Option("--replace", help="overwrite a skill of the same name")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Import a skill archive (checked: no links or '..' paths, safetensors only, same base model)."""
    manifest = _store(with_base=True).import_archive(archive, replace=replace)
    if as_json:
        _print_json({"name": manifest.name, "current": manifest.current, "revisions": manifest.revision_numbers()})
    else:
        console.print(f"imported {manifest.name} (revisions {manifest.revision_numbers()})")


# ------------------------------------------------------------------------------------------------------- buffer


def _buffer() -> Any:
    from agent.api import default_buffer

    return default_buffer(Settings())


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
    stats = _buffer().stats()
    if as_json:
        _print_json(stats.model_dump(mode="json"))
        return
    table = Table(show_header=False, title="episode buffer")
    for key, value in stats.model_dump().items():
        table.add_row(key, str(value))
    console.print(table)


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
    episodes = _buffer().list(status=status, skill=skill, consolidated=consolidated, limit=limit)
    if as_json:
        _print_json({"episodes": [_episode_row(t) for t in episodes]})
        return
    table = Table(title=f"{len(episodes)} episodes")
    for column in ("id", "status", "skills", "consolidated", "task"):
        table.add_column(column)
    for t in episodes:
        table.add_row(
            t.id[:12], t.outcome.status, ", ".join(s.name for s in t.skills), t.consolidated_into or "", t.task[:70]
        )
    console.print(table)


@buffer_app.command("show")
def buffer_show(episode_id: str, as_json: JsonFlag = False) -> None:
    """One episode: every message and step."""
    buffer = _buffer()
    matches = [t.id for t in buffer.list() if t.id.startswith(episode_id)] if len(episode_id) < 32 else [episode_id]
    if len(matches) != 1:
        raise UserError(f"{len(matches)} episodes match {episode_id!r}", hint="give more of the id")
    trajectory = buffer.get(matches[0])
    if as_json:
        _print_json(trajectory.model_dump(mode="json"))
        return
    console.print(_episode_row(trajectory))
    for step in trajectory.steps:
        console.print(_step_line(step))


@buffer_app.command("discard")
def buffer_discard(
    episode_ids: Annotated[list[str], typer.Argument(help="ids to delete")],
    as_json: JsonFlag = False,
) -> None:
    """Delete episodes (successes included: this is how a user lets one go before consolidation)."""
    removed = _buffer().discard(episode_ids)
    if as_json:
        _print_json({"discarded": removed})
    else:
        console.print(f"discarded {len(removed)} of {len(episode_ids)}")


@app.command("consolidate")
def consolidate(
    skill: Annotated[str | None, typer.Option(help="consolidate into this skill only")] = None,
    min_episodes: Annotated[int | None, typer.Option("--min-episodes", min=1, help="successes needed")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train waiting successful episodes into skills: a new revision each, promoted only if not worse."""
    from agent.api import Agent

    agent = Agent(settings=Settings())
    reports = agent.consolidate(skill, min_episodes=min_episodes)
    if as_json:
        _print_json({"reports": [r.model_dump(mode="json") for r in reports]})
        return
    if not reports:
        console.print("Nothing to consolidate: not enough waiting successes (see `habitloop buffer stats`).")
    for r in reports:
        if r.skipped:
            console.print(f"[yellow]skipped[/yellow] {escape(r.skill)}: {escape(r.reason)}")
            continue
        verdict = "[green]promoted[/green]" if r.promoted else "[red]rejected[/red]"
        console.print(
            f"{r.skill} revision {r.revision}: {verdict} ({r.reason}); {len(r.episodes)} episodes, "
            f"{r.train_seconds:.0f} s training at {r.train_tokens_per_second:.0f} tokens/s; report {r.report_path}"
        )


# ------------------------------------------------------------------------------------------------------- run


def _step_line(step: Any) -> str:
    from rich.markup import escape

    if step.kind == "model":
        return f"[bold cyan]model[/bold cyan] {escape(step.text)}"
    if step.kind == "tool_call":
        return f"[bold yellow]call[/bold yellow]  {step.tool}({escape(json.dumps(step.arguments))})"
    if step.kind == "tool_result":
        colour = "green" if step.ok else "red"
        return f"[bold {colour}]result[/bold {colour}] {escape(step.text)}"
    if step.kind == "parse_error":
        return f"[bold red]refused[/bold red] {escape(step.text)}"
    return f"[bold]final[/bold] {escape(step.text)}"


@app.command("run")
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
    from agent.api import Agent, load_tools
    from tools import builtin_tools

    extra = [item for spec in tools or [] for item in load_tools(spec)]
    agent = Agent(settings=Settings(), tools=[*builtin_tools(), *extra], max_steps=max_steps, instance=instance)
    for step in agent.stream(task, skills=skill or [], thread_id=thread, route=route):
        if not as_json:
            console.print(_step_line(step))
    result = agent.last_result
    if as_json:
        trajectory = result.trajectory
        _print_json(
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
    console.print(
        f"[dim]outcome: {result.outcome.status} ({result.outcome.judged_by}) · thread {result.thread_id} · "
        f"{result.trajectory.prompt_tokens}+{result.trajectory.completion_tokens} tokens · "
        f"{result.trajectory.seconds:.1f} s[/dim]"
    )


# ------------------------------------------------------------------------------------------------------- bench, demo


@app.command("bench")
def bench(
    as_json: JsonFlag = False,
    skills: Annotated[
        str, typer.Option(help="store sizes for switch/load, comma-separated ('' skips)")
    ] = "10,100,1000",
    hot: Annotated[str, typer.Option(help="skills hot in the model for switch/load, comma-separated")] = "1,8,64",
    decode_tokens: Annotated[int, typer.Option(help="tokens per decode / mixed-batch measurement (0: skip both)")] = 32,
    routing: Annotated[int, typer.Option(help="skills in the routing benchmark (0: skip)")] = 10_000,
    instances: Annotated[int, typer.Option(help="personal instances in the instance benchmark (0: skip)")] = 1000,
    repeats: Annotated[int, typer.Option(min=1, help="repetitions per figure (the median is reported)")] = 7,
    cold_gguf: Annotated[bool, typer.Option(help="also time a cold GGUF conversion (~30 s)")] = True,
    consolidation: Annotated[
        int, typer.Option(help="episodes for the consolidation benchmark (0: skip; 64 takes a few minutes)")
    ] = 64,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="also write the JSON here")] = None,
) -> None:
    """Measure base load, decoding with composed skills, mixed-skill batches, hot switch / cold load against plain
    peft, routing and consolidation; print a table (or JSON) and save it under reports/bench.json."""
    from agent.bench.runner import render_table, run_bench

    sizes = [int(s) for s in skills.split(",") if s.strip()]
    result = run_bench(
        Settings(),
        store_sizes=sizes,
        hot_sizes=[int(h) for h in hot.split(",") if h.strip()],
        decode_tokens=decode_tokens or None,
        routing_skills=routing or None,
        instances=instances or None,
        repeats=repeats,
        cold_gguf=cold_gguf,
        consolidation_episodes=consolidation or None,
        progress=True,
    )
    payload = result.model_dump(mode="json")
    settings = Settings()
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    for path in filter(None, (output, settings.reports_dir / "bench.json")):
        path.write_text(json.dumps(payload, indent=2) + "\n")
    if as_json:
        _print_json(payload)
    else:
        console.print(render_table(result))


@app.command("demo")
def demo() -> None:
    """Demonstrations -> buffer -> retrieval -> consolidation into a skill, measured end to end on the real base."""
    from agent.evals.demo import run_demo

    run_demo(Settings(), console=console)


def main() -> None:
    """Entry point: run the app and turn habitloop's errors into one red line with the fix, not a traceback."""
    try:
        app(standalone_mode=False)
    except HabitloopError as error:
        err_console.print(f"[red]error:[/red] {terminal_text(error.message)}")
        if error.hint:
            err_console.print(f"[yellow]fix:[/yellow] {terminal_text(error.hint)}")
        sys.exit(2 if isinstance(error, UserError) else 1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except Exception as error:  # click's usage errors
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
