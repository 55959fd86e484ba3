"""`habitloop skills learn-style` and `habitloop eval humaneval`: a coding style as a skill, and its measurement.

Both join groups of other modules (`skills` of `agent/cli/skills.py`, `eval` of `agent/cli/bfcl.py`); they are
registered in `agent/cli/app.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.config import Settings

# A whole function (HumanEval's canonical solutions are at most ~200 tokens) with room for a docstring.
DEFAULT_MAX_NEW_TOKENS = 320


def make_agent(settings: Settings, max_new_tokens: int) -> Any:
    """The agent both commands use: the shared base, the store, the buffer; no tools. Tests replace this factory."""
    from agent.api import Agent

    return Agent(settings=settings, tools=[], max_steps=1, max_new_tokens=max_new_tokens)


def learn_style(
    path: Annotated[str, typer.Argument(help="a repository's folder, or an installed package's name")],
    name: Annotated[str, typer.Option("--name", help="the style skill to create or revise")] = "python-style",
    max_functions: Annotated[int, typer.Option("--max-functions", min=4, help="demonstrations at most")] = 256,
    max_lines: Annotated[int, typer.Option("--max-lines", min=2, help="longest function taught, in lines")] = 30,
    max_violation_share: Annotated[
        float,
        typer.Option("--max-violation-share", min=0.0, max=1.0, help="a rule is kept if at most this share breaks it"),
    ] = 0.1,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="training steps at most")] = None,
    record_only: Annotated[
        bool, typer.Option("--record-only", help="record the demonstrations (retrieval), do not consolidate")
    ] = False,
    self_contained: Annotated[
        bool,
        typer.Option(
            "--self-contained", help="teach only functions that run outside the repository, with their stdlib imports"
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Learn a repository's coding style: find the ruff rules its functions keep to, record its documented functions
    as demonstrations, consolidate them into a `style` skill (gated by those rules)."""
    from agent.style import learn_style as learn

    settings = Settings()
    agent = make_agent(settings, DEFAULT_MAX_NEW_TOKENS)
    overrides: dict[str, Any] = {} if max_steps is None else {"max_steps": max_steps}
    if not as_json:
        output.err_console.print(f"learning the style of {path} into {name} ...")
    report = learn(
        agent, path, name, max_functions=max_functions, max_lines=max_lines, max_violation_share=max_violation_share,
        self_contained=self_contained, consolidate=not record_only, **overrides,
    )  # fmt: skip
    if as_json:
        output.print_json(report.model_dump(mode="json"))
        return
    output.console.print(
        f"{report.path} ({report.commit or report.version or 'no commit'}): {report.functions} functions in "
        f"{report.files} files, {report.in_style} in style; rules: {report.rules.describe()}"
    )
    output.console.print(f"recorded {report.demonstrations} demonstrations")
    if report.consolidation is not None:
        c = report.consolidation
        verdict = "promoted" if c.promoted else "not promoted"
        output.console.print(f"{name}: {verdict} (revision {c.revision}): {c.reason}")


def eval_humaneval(
    mode: Annotated[str, typer.Option("--mode", help="base, retrieval or skill")] = "base",
    skill: Annotated[
        str, typer.Option("--skill", help="the style skill: its rules judge every mode; mode skill runs it (A+B too)")
    ] = "python-style",
    split: Annotated[str, typer.Option("--split", help="train, test or all")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="only the first N problems")] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="worked examples in retrieval mode")] = 3,
    timeout: Annotated[float, typer.Option("--timeout", min=0.5, help="seconds per problem's tests")] = 10.0,
    out: Annotated[Path | None, typer.Option("--out", help="write one JSON line per problem here")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=16)] = DEFAULT_MAX_NEW_TOKENS,
    as_json: JsonFlag = False,
) -> None:
    """HumanEval, asked as a user asks for a function: style rate by the skill's ruff rules, pass@1 (sandboxed)."""
    from agent.evals.humaneval.data import load_problems
    from agent.evals.humaneval.harness import evaluate
    from skills.errors import UserError

    if split not in ("train", "test", "all"):
        raise UserError(f"unknown split {split!r}", hint="use train, test or all")
    settings = Settings()
    problems = load_problems(settings.home, split, limit=limit)  # type: ignore[arg-type]  # checked above
    agent = make_agent(settings, max_new_tokens)
    in_style = passed = 0
    with output.progress_bar(as_json) as progress:
        bar = progress.add_task(f"humaneval/{split} {mode}", total=len(problems), status="")

        def advance(result: Any) -> None:
            nonlocal in_style, passed
            in_style, passed = in_style + result.in_style, passed + result.passed
            progress.update(bar, advance=1, status=f"{in_style} in style, {passed} passed")

        report = evaluate(
            agent, problems, mode=mode, skill=skill, split=split, k=k, timeout=timeout, on_case=advance
        )  # fmt: skip
    if out is not None:
        report.write_cases(out)
    if as_json:
        output.print_json(report.summary() | ({"out": str(out)} if out else {}))
        return
    table = Table(title=f"HumanEval {split}, rules of {report.rules_from}")
    for column in ("mode", "n", "style rate", "pass@1", "violations / function", "prompt tokens", "s / problem"):
        table.add_column(column)
    families = ", ".join(f"{f} {v:.2f}" for f, v in report.violations_per_function.items()) or "none"
    table.add_row(
        report.mode + (f" ({report.skill})" if report.skill else f" (k={report.k})" if report.k else ""),
        str(report.n),
        f"{report.style_rate:.1%}",
        f"{report.pass_at_1:.1%}",
        families,
        f"{report.prompt_tokens_mean:.0f}",
        f"{report.seconds_per_case:.2f}",
    )
    output.console.print(table)
