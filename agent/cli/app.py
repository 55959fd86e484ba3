"""The `habitloop` root command: every command group and root command registered in one place, and `main`.

Each group lives in its own module (`agent/cli/skills.py` for `habitloop skills ...`, and so on); this module only
assembles them, in the order `habitloop --help` lists them, and turns habitloop's errors into one line with the fix.
"""

from __future__ import annotations

import sys

import typer

import agent.cli.bench as cli_bench
import agent.cli.forget as cli_forget
import agent.cli.memory as cli_memory
import agent.cli.output as output
import agent.cli.route as cli_route
import agent.cli.run as cli_run
import agent.cli.serve as cli_serve
import agent.cli.style as cli_style
from agent.cli.bfcl import eval_app, practice_app
from agent.cli.buffer import buffer_app
from agent.cli.model import model_app
from agent.cli.packs import packs_app
from agent.cli.skills import skills_app
from skills.errors import HabitloopError, UserError

app = typer.Typer(help="habitloop: an agent whose skills live in LoRA adapters on one shared base model.")
app.add_typer(model_app, name="model")
app.add_typer(skills_app, name="skills")
app.add_typer(buffer_app, name="buffer")
app.command("route")(cli_route.route)
app.command("serve")(cli_serve.serve)
app.command("bench-serve")(cli_serve.bench_serve)
skills_app.command("learn-style")(cli_style.learn_style)
eval_app.command("memory")(cli_memory.eval_memory)
eval_app.command("humaneval")(cli_style.eval_humaneval)
practice_app.command("memory")(cli_memory.practice_memory)
app.add_typer(eval_app, name="eval")
app.add_typer(practice_app, name="practice")
app.add_typer(packs_app, name="packs")
app.command("consolidate")(cli_run.consolidate)
app.command("forget")(cli_forget.forget)
app.command("run")(cli_run.run)
app.command("bench")(cli_bench.bench)
app.command("demo")(cli_bench.demo)


def main() -> None:
    """Entry point: run the app and turn habitloop's errors into one red line with the fix, not a traceback."""
    try:
        app(standalone_mode=False)
    except HabitloopError as error:
        output.print_error(error)
        sys.exit(2 if isinstance(error, UserError) else 1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        output.err_console.print("aborted")
        sys.exit(1)
    except Exception as error:  # click's usage errors
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
