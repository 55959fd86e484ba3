"""`habitloop eval bfcl` and `habitloop practice bfcl`: the BFCL harness and BFCL practice on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.config import Settings
from agent.evals.bfcl.data import Split

eval_app = typer.Typer(help="Evaluations: BFCL (single-turn Python categories), BFCL memory, HumanEval (coding style).")
practice_app = typer.Typer(help="Collect training episodes (BFCL train split).")

Category = Annotated[
    str,
    typer.Option(
        "--category",
        help="simple_python, multiple, live_simple, live_multiple, or irrelevance (no offered function fits: "
        "right when nothing is called; evaluation only)",
    ),
]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", min=8, help="tokens the model may write per case")]
# Enough for any single call of simple_python/multiple; a base that answers in prose is cut there, not at 256.
DEFAULT_MAX_NEW_TOKENS = 96


def make_agent(settings: Settings, max_new_tokens: int, instance: str | None = None) -> Any:
    """The agent the commands use: the shared base, the store, the buffer (as personal `instance`, whose skills
    resolve too). Tests replace this factory."""
    from agent.api import Agent

    return Agent(settings=settings, tools=[], max_steps=1, max_new_tokens=max_new_tokens, instance=instance)


@eval_app.command("bfcl")
def eval_bfcl(
    category: Category = "simple_python",
    split: Annotated[str, typer.Option("--split", help="train, test or all")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="only the first N cases")] = None,
    mode: Annotated[str, typer.Option("--mode", help="base, retrieval or skill")] = "base",
    skill: Annotated[
        str | None, typer.Option("--skill", help="the skill for --mode skill: NAME, NAME@REV or A+B (composed)")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="worked examples in retrieval mode")] = 3,
    out: Annotated[Path | None, typer.Option("--out", help="write one JSON line per case here")] = None,
    max_new_tokens: MaxNewTokens = DEFAULT_MAX_NEW_TOKENS,
    instance: Annotated[
        str | None, typer.Option("--instance", help="as this user, so --skill may name theirs (tool-habits+memory)")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run BFCL cases through the agent (tools = each case's functions, never executed); judge the first call."""
    from agent.evals.bfcl.data import check_category, load_cases
    from agent.evals.bfcl.harness import evaluate
    from skills.errors import UserError

    if split not in ("train", "test", "all"):
        raise UserError(f"unknown split {split!r}", hint="use train, test or all")
    chosen = cast(Split, split)
    settings = Settings()
    cases = load_cases(settings.home, check_category(category), chosen, limit=limit)
    agent = make_agent(settings, max_new_tokens, instance) if instance else make_agent(settings, max_new_tokens)
    correct = 0
    with output.progress_bar(as_json) as progress:
        bar = progress.add_task(f"{category}/{split} {mode}", total=len(cases), status="")

        def advance(result: Any) -> None:
            nonlocal correct
            correct += result.valid
            progress.update(bar, advance=1, status=f"{correct} correct")

        report = evaluate(
            agent,
            category,
            chosen,
            limit,
            mode,
            skill,
            k,
            cases=cases,
            on_case=advance,
        )
    if out is not None:
        report.write_cases(out)
    if as_json:
        output.print_json(report.summary() | ({"out": str(out)} if out else {}))
        return
    table = Table(title=f"BFCL {category} / {split}")
    for column in ("mode", "n", "accuracy", "tool calls", "prompt tokens (mean)", "s / case"):
        table.add_column(column)
    table.add_row(
        report.mode + (f" ({report.skill})" if report.skill else f" (k={report.k})" if report.k else ""),
        str(report.n),
        f"{report.accuracy:.1%}",
        f"{report.tool_call_rate:.0%}",
        f"{report.prompt_tokens_mean:.0f}",
        f"{report.seconds_per_case:.2f}",
    )
    output.console.print(table)
    if out is not None:
        output.console.print(f"per-case results: {out}")


@practice_app.command("bfcl")
def practice_bfcl(
    category: Category = "simple_python",
    split: Annotated[str, typer.Option("--split", help="only train may be practised on")] = "train",
    attempts: Annotated[int, typer.Option("--attempts", min=1, help="samples per case at most")] = 4,
    skill: Annotated[str | None, typer.Option("--skill", help="practise with this skill active")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="only the first N cases")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="sampling temperature")] = 0.7,
    demonstrations: Annotated[
        bool, typer.Option("--demonstrations", help="record the ground-truth calls as demonstrations instead")
    ] = False,
    state_optional: Annotated[
        bool,
        typer.Option("--state-optional", help="with --demonstrations: state the optional values the answer gives too"),
    ] = False,
    max_new_tokens: MaxNewTokens = DEFAULT_MAX_NEW_TOKENS,
    as_json: JsonFlag = False,
) -> None:
    """Collect successful episodes from the train split: sampled and judged by BFCL's checker, or demonstrated."""
    from agent.evals.bfcl.data import check_category, load_cases
    from agent.evals.bfcl.practice import practice, record_demonstrations
    from skills.errors import UserError

    if split != "train":
        raise UserError(f"practice on the {split!r} split would train on evaluation items", hint="use --split train")
    if state_optional and not demonstrations:
        raise UserError("--state-optional shapes demonstrations", hint="add --demonstrations")
    settings = Settings()
    cases = load_cases(settings.home, check_category(category), "train", limit=limit)
    agent = make_agent(settings, max_new_tokens)
    with output.progress_bar(as_json) as progress:
        if demonstrations:
            bar = progress.add_task(f"{category} demonstrations", total=len(cases), status="")
            recorded = record_demonstrations(
                agent, cases, state_optional=state_optional, on_case=lambda _: progress.update(bar, advance=1)
            )
            payload: dict[str, Any] = {
                "category": category,
                "demonstrations": len(recorded),
                "episode_ids": [t.id for t in recorded],
            }
        else:
            bar = progress.add_task(f"{category} practice", total=len(cases), status="")
            solved = 0

            def advance(_: Any, success: bool) -> None:
                nonlocal solved
                solved += success
                progress.update(bar, advance=1, status=f"{solved} solved")

            summary = practice(agent, cases, attempts=attempts, skill=skill, temperature=temperature, on_case=advance)
            payload = {"category": category, "skill": skill} | summary.model_dump()
    if as_json:
        output.print_json(payload)
        return
    if demonstrations:
        output.console.print(f"recorded {payload['demonstrations']} demonstrations from {category}/train in the buffer")
    else:
        output.console.print(
            f"practice on {payload['cases']} {category}/train cases: {payload['solved']} solved in "
            f"{payload['attempts']} samples; the successes wait in the buffer for `habitloop consolidate`"
        )
