"""`habitloop model ...`: the shared base model."""

from __future__ import annotations

import typer
from rich.table import Table

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.config import Settings

model_app = typer.Typer(help="The shared base model.")


@model_app.command("info")
def model_info(as_json: JsonFlag = False) -> None:
    """Load the base model and describe it (name, source, parameters, dtype, fingerprint, cache path, load time)."""
    from agent.base import load_base

    info = load_base(settings=Settings()).info()
    if as_json:
        output.print_json(info.model_dump())
        return
    table = Table(show_header=False)
    for key, value in info.model_dump().items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    output.console.print(table)
