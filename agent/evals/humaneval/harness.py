"""The HumanEval harness for a coding style: each problem asked as a user asks for a function, the reply judged twice.

- style: the reply's code (its first fenced block, else the whole reply) checked by ruff against the style skill's
  rules (`memory.style`): in style when it breaks none of them; violations counted by rule family.
- correctness: pass@1 (greedy): the code, after the problem's own import lines, run against HumanEval's tests in a
  sandboxed subprocess (`agent.evals.humaneval.sandbox`), never in this process.

Every problem runs through the real agent loop (`Agent.run_batch`, no tools, one step), as BFCL's cases do, and the
runs leave the buffer afterwards: a test item must never become training data. Modes: `base` (no skill, no
examples), `retrieval` (no skill; the k most similar successful episodes of the buffer, e.g. a repository's
functions recorded by `habitloop skills learn-style --record-only`, shown as worked examples), `skill` (the style
skill active, or a composition such as `tool-habits+python-style`). The rules judging every mode are the style
skill's (`--skill`), so the three modes are measured by one yardstick.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, Field

from agent.evals.bfcl.harness import chunks, skill_list, skill_revisions
from agent.evals.humaneval.data import Problem
from agent.evals.humaneval.sandbox import check_many
from memory.recipe import style_of
from memory.style import StyleRules, check_code, code_of, family_of
from skills.errors import UserError
from tools import ToolRegistry

Mode = Literal["base", "retrieval", "skill"]
MODES: tuple[Mode, ...] = ("base", "retrieval", "skill")


class ProblemResult(BaseModel):
    """One problem, as written to `--out` (one JSON line each)."""

    task_id: str
    mode: Mode
    text: str = Field(description="the model's raw reply")
    code: str = Field(description="the code judged: the reply's first fenced block, else the reply")
    violations: list[str] = Field(description="codes of the style rules the code breaks")
    in_style: bool
    passed: bool = Field(description="HumanEval's tests pass (greedy: pass@1)")
    status: str = Field(description="passed, failed, error or timeout")
    prompt_tokens: int
    seconds: float


class HumanEvalReport(BaseModel):
    """Style and correctness of one mode on a split: style rate, violations per function by rule family, pass@1,
    prompt length and speed; `cases` holds every problem's result."""

    mode: Mode
    skill: str | None = None
    rules_from: str
    split: str
    k: int = 0
    n: int
    style_rate: float
    pass_at_1: float
    violations_per_function: dict[str, float]
    prompt_tokens_mean: float
    seconds_per_case: float
    cases: list[ProblemResult] = Field(default_factory=list, exclude=True)

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def write_cases(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(case.model_dump_json() + "\n" for case in self.cases))


def style_rules(agent: Any, skill: str) -> tuple[StyleRules, str]:
    """The rules of the style skill among the skills `skill` names (`python-style`, `tool-habits+python-style`,
    `python-style@2`), read from its revision (the recipe it was trained with), and that skill's name."""
    for part, record in skill_revisions(agent, skill):  # an unknown skill fails here, before any problem runs
        style = style_of(record)
        if style is not None:
            return style.rules, part
    raise UserError(
        f"{skill!r} holds no style skill (no ruff rules were learned with it)",
        hint="pass a skill made by `habitloop skills learn-style`, e.g. --skill python-style",
    )


def _run_kwargs(problem: Problem, mode: Mode, skill: str | None, k: int) -> dict[str, Any]:
    return {
        "task": problem.request,
        "skills": skill_list(skill) if mode == "skill" and skill else [],
        "tools": ToolRegistry(),
        "max_steps": 1,
        "examples": k if mode == "retrieval" else 0,
    }


POSTPONED = "from __future__ import annotations"
_FUTURE = re.compile(r"^from __future__ import [^\n]*\n?", re.MULTILINE)


def program(problem: Problem, code: str) -> str:
    """What runs against a problem's tests: the prompt's imports and helper functions (some tests call them), then
    the model's code (a reply that defines a helper again overrides the prompt's).

    Annotations are postponed (PEP 563, the default of Python 3.14's PEP 649 too), as in every module of a
    repository written that way (habitloop's own): a function annotated with a name its module imports for typing
    (`Sequence`) is correct code there, and an annotation never changes what the tests check. A reply's own
    `__future__` imports are folded into that first line (they must come first in a file). This was added after
    the first measurement, where 27 of the style skill's 53 errors were such annotations (README, Coding style)."""
    futures = [line.strip() for line in _FUTURE.findall(code)]
    names = sorted({n.strip() for line in futures for n in line.split("import", 1)[1].split(",")} | {"annotations"})
    head = f"from __future__ import {', '.join(names)}" if names != ["annotations"] else POSTPONED
    parts = (head, problem.preamble, problem.helpers, _FUTURE.sub("", code))
    return "\n\n\n".join(part for part in parts if part)


def run_problems(
    agent: Any, problems: Sequence[Problem], rules: StyleRules, *, mode: Mode, skill: str | None, k: int, timeout: float
) -> list[ProblemResult]:
    """Several problems as one `agent.run_batch`; each reply style-checked (one ruff run) and tested (sandboxed)."""
    started = time.perf_counter()
    runs = agent.run_batch([_run_kwargs(p, mode, skill, k) for p in problems], concurrency=len(problems))
    seconds = (time.perf_counter() - started) / len(problems)
    agent.buffer.discard([run.run_id for run in runs])
    texts = [next((s.text or "" for s in run.steps if s.kind == "model"), "") for run in runs]
    codes = [code_of(text) for text in texts]
    checks = check_code(codes, rules)
    verdicts = check_many(
        [(program(p, code), p.test, p.entry_point) for p, code in zip(problems, codes, strict=True)],
        timeout=timeout,
    )
    return [
        ProblemResult(
            task_id=problem.task_id,
            mode=mode,
            text=text,
            code=code,
            violations=list(check.violations),
            in_style=check.in_style,
            passed=verdict.passed,
            status=verdict.status,
            prompt_tokens=run.trajectory.prompt_tokens,
            seconds=seconds,
        )
        for problem, text, code, check, verdict, run in zip(problems, texts, codes, checks, verdicts, runs, strict=True)
    ]


def evaluate(
    agent: Any,
    problems: Sequence[Problem],
    *,
    mode: str,
    skill: str,
    split: str = "test",
    k: int = 3,
    timeout: float = 10.0,
    batch: int = 8,
    on_case: Callable[[ProblemResult], None] | None = None,
) -> HumanEvalReport:
    """Run `problems` through the agent in one mode, `batch` at a time; `skill` names the style skill whose rules
    judge every mode (and, in mode `skill`, what runs)."""
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    checked = cast(Mode, mode)
    rules, rules_from = style_rules(agent, skill)
    results: list[ProblemResult] = []
    for chunk in chunks(problems, batch):
        for result in run_problems(agent, chunk, rules, mode=checked, skill=skill, k=k, timeout=timeout):
            results.append(result)
            if on_case is not None:
                on_case(result)
    n = len(results)
    families: Counter[str] = Counter(family_of(code) for r in results for code in r.violations)
    return HumanEvalReport(
        mode=checked,
        skill=skill if checked == "skill" else None,
        rules_from=rules_from,
        split=split,
        k=k if checked == "retrieval" else 0,
        n=n,
        style_rate=sum(r.in_style for r in results) / n if n else 0.0,
        pass_at_1=sum(r.passed for r in results) / n if n else 0.0,
        violations_per_function={family: count / n for family, count in sorted(families.items())} if n else {},
        prompt_tokens_mean=sum(r.prompt_tokens for r in results) / n if n else 0.0,
        seconds_per_case=sum(r.seconds for r in results) / n if n else 0.0,
        cases=results,
    )
