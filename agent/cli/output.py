"""Where every `habitloop` command writes: one console for results, one for errors and progress, `--json` printing.

One home so that each command module prints the same way and tests can widen the consoles in one place. Command
modules reach the consoles through this module (`output.console`), not by importing them, so that a test replacing
`output.console` replaces it for every command.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.cli.text import terminal_text
from skills.errors import HabitloopError

console = Console()
err_console = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object for scripts")]


def print_json(payload: Any) -> None:
    """`payload` as one indented JSON object on stdout (what `--json` promises scripts; never through rich)."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def progress_bar(quiet: bool) -> Progress:
    """A bar on stderr (stdout stays the command's result): description, bar, n of total, a status field, elapsed.
    `quiet` (e.g. under `--json`) hides it."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        disable=quiet,
        transient=True,
        console=err_console,
    )


def print_error(error: HabitloopError) -> None:
    """One red line with the message and, when there is one, a yellow line with the fix; both printed inert."""
    err_console.print(f"[red]error:[/red] {terminal_text(error.message)}")
    if error.hint:
        err_console.print(f"[yellow]fix:[/yellow] {terminal_text(error.hint)}")


def step_line(step: Any) -> str:
    """One step of a trajectory (model text, tool call, tool result, refusal, final answer) as a console line."""
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
