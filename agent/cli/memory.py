"""`habitloop eval memory` and `habitloop practice memory`: BFCL memory on the command line.

Both commands join the `eval` and `practice` groups of `agent/cli/bfcl.py` (registered in `agent/cli/app.py`).
Each scenario is one user, so each runs on its own `Agent(instance=scenario)`; the agents of one command share one
base, model, buffer and checkpointer.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.config import Settings

ScenarioOption = Annotated[
    str,
    typer.Option(
        "--scenario",
        help="customer, finance, healthcare, notetaker or student; `all`: the DEV ones (customer, finance, "
        "notetaker), plus the FINAL ones (healthcare, student) only with --final",
    ),
]


def make_agent(settings: Settings, instance: str, like: Any = None) -> Any:
    """The user's agent: `Agent(instance=...)`, sharing `like`'s base, model, store, buffer and checkpointer when
    given (one base for every user of a command). Tests replace this factory."""
    from agent.api import Agent

    if like is None:
        return Agent(settings=settings, instance=instance, tools=[], max_steps=1)
    return Agent(
        settings=settings,
        instance=instance,
        base=like.base,
        model=like.model,
        store=like.store,
        buffer=like.buffer,
        checkpointer=like.checkpointer,
        tools=[],
        max_steps=1,
    )


def _advance(progress: Any, bar: Any, done: int) -> None:
    progress.update(bar, advance=done)


def _advance_one(progress: Any, bar: Any, _: bool) -> None:
    progress.update(bar, advance=1)


def scenarios_of(scenario: str, final: bool) -> list[str]:
    """The scenarios a `--scenario` value names: one, or `all` (DEV, and FINAL too with `final`)."""
    from agent.evals.memory.data import DEV_SCENARIOS, FINAL_SCENARIOS, check_scenario

    if scenario == "all":
        return [*DEV_SCENARIOS, *(FINAL_SCENARIOS if final else ())]
    return [check_scenario(scenario)]


def agents_for(settings: Settings, scenarios: list[str]) -> dict[str, Any]:
    agents: dict[str, Any] = {}
    for scenario in scenarios:
        agents[scenario] = make_agent(settings, scenario, like=next(iter(agents.values()), None))
    return agents


def eval_memory(
    scenario: ScenarioOption = "all",
    mode: Annotated[
        str, typer.Option("--mode", help="base, retrieval, weights, weights+retrieval, context, or all")
    ] = "base",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="only the first N questions per scenario")] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="turns retrieved per question in the retrieval modes")] = 4,
    final: Annotated[bool, typer.Option("--final", help="with --scenario all: also the FINAL scenarios")] = False,
    isolation: Annotated[
        bool, typer.Option("--isolation", help="also ask every user's questions with every other user's adapter")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="write one JSON line per answer here")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask each user's BFCL memory questions cold (no tools, no thread, nothing recorded) in each mode; judge them
    by BFCL's rule, with a control (another question's answers). Writes reports/memory-eval.json and .png."""
    from agent.evals.memory.data import load_questions
    from agent.evals.memory.harness import MODES, check_mode, check_ready, evaluate_memory
    from agent.evals.memory.report import markdown_table, write_memory_report

    modes = list(MODES) if mode == "all" else [check_mode(mode)]
    settings = Settings()
    chosen = scenarios_of(scenario, final)
    questions = {s: load_questions(settings.home, s) for s in chosen}
    agents = agents_for(settings, chosen)
    for s in chosen:  # a missing adapter or an empty buffer fails now, before any question is asked
        for m in modes:
            check_ready(agents[s], m)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("")
    reports = []
    with output.progress_bar(as_json) as progress:
        for s in chosen:
            for m in modes:
                n = min(limit or len(questions[s]), len(questions[s]))
                bar = progress.add_task(f"{s} {m}", total=n, status="")
                report = evaluate_memory(
                    agents[s],
                    s,
                    m,
                    questions=questions[s],
                    limit=limit,
                    k=k,
                    on_batch=partial(_advance, progress, bar),
                )
                progress.update(bar, completed=n, status="skipped" if report.skipped else f"{report.accuracy:.0%}")
                reports.append(report)
                if out is not None:
                    report.write_answers(out)
        cells = _isolation(agents, questions, limit, progress) if isolation else []
    files = write_memory_report(reports, settings.reports_dir, isolation=cells)
    if as_json:
        payload = {"rows": [r.summary() for r in reports], "isolation": [c.model_dump() for c in cells]}
        output.print_json(payload | files.model_dump() | ({"out": str(out)} if out else {}))
        return
    output.console.print(markdown_table(reports), markup=False, highlight=False)
    if cells:
        output.console.print(_leak_table(cells))
    output.console.print(f"report: {files.json_path}" + (f" and {files.png_path}" if files.png_path else ""))
    if out is not None:
        output.console.print(f"per-answer results: {out}")


def _isolation(agents: dict[str, Any], questions: dict[str, Any], limit: int | None, progress: Any) -> list[Any]:
    from agent.evals.memory.isolation import leak_matrix
    from skills.errors import UserError
    from skills.instances import LayeredStore

    if len(agents) < 2:
        raise UserError("--isolation needs at least two users", hint="use --scenario all")
    first = next(iter(agents.values()))
    view = LayeredStore(first.store, first.settings.instances_dir)  # reads every user's `<user>/memory`
    pairs = len(agents) * (len(agents) - 1)
    bar = progress.add_task("isolation", total=pairs, status="")
    asked = {user: list(qs)[:limit] if limit else list(qs) for user, qs in questions.items()}
    return leak_matrix(first.model, view, asked, on_cell=lambda _: progress.update(bar, advance=1))


def _leak_table(cells: list[Any]) -> Table:
    table = Table(title="isolation: another user's memory adapter")
    for column in ("asker", "adapter of", "n", "leak rate", "base (chance)"):
        table.add_column(column)
    for c in cells:
        table.add_row(c.asker, c.owner, str(c.n), f"{c.leak_rate:.1%}", f"{c.base_leak_rate:.1%}")
    return table


def practice_memory(
    scenario: ScenarioOption = "all",
    final: Annotated[bool, typer.Option("--final", help="with --scenario all: also the FINAL scenarios")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Tell each user's agent their BFCL memory conversations (one thread each; turns already in the buffer are
    not told again). `habitloop consolidate --instance S --facts` then turns them into the user's memory adapter."""
    from agent.evals.memory.data import load_conversations
    from agent.evals.memory.play import play_conversations

    settings = Settings()
    chosen = scenarios_of(scenario, final)
    agents = agents_for(settings, chosen)
    reports = []
    with output.progress_bar(as_json) as progress:
        for s in chosen:
            conversations = load_conversations(settings.home, s)
            bar = progress.add_task(f"play {s}", total=sum(len(c.turns) for c in conversations), status="")
            reports.append(
                play_conversations(
                    agents[s], conversations, progress=False, on_turn=partial(_advance_one, progress, bar)
                )
            )
    if as_json:
        output.print_json({"plays": [r.model_dump() for r in reports]})
        return
    for r in reports:
        output.console.print(
            f"{r.instance}: {r.turns_played} turns told, {r.turns_skipped} already in the buffer, "
            f"{r.conversations} conversations, {r.seconds:.1f} s"
        )
