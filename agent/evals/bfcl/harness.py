"""The BFCL harness: every case runs through the real agent loop, and the first call in the model's text is judged.

Each case offers its own functions as the run's tools (`Agent.run(..., tools=...)`); they are never executed: the run
has one step (`max_steps=1`), so a valid call ends it before any tool could run. BFCL's parameter types ("dict",
"float", "tuple", "any") are mapped to JSON schema for the system prompt, and dotted function names ("math.hypot")
are offered as "math_hypot" (tool names cannot contain dots; the checker treats both spellings as one, as BFCL does
for OpenAI-style names). The runs are recorded in the buffer like any run, then discarded again: an evaluation on the
test split must never become training data.

Modes: `base` (no skill, no examples), `retrieval` (no skill, the k most similar successful episodes of the buffer
shown as worked examples), `skill` (the named skill active, no examples; `a@2` pins a revision, `a+b` composes
two skills).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from agent.evals.bfcl.checker import Verdict, check_call, check_no_call
from agent.evals.bfcl.data import BfclCase, Split, load_cases
from skills.errors import UserError
from skills.instances import LayeredStore
from skills.reference import SkillRef
from tools import Tool, ToolRegistry, parse_tool_calls

T = TypeVar("T")
Mode = Literal["base", "retrieval", "skill"]
MODES: tuple[Mode, ...] = ("base", "retrieval", "skill")

# BFCL's type names -> JSON schema (bfcl_eval's GORILLA_TO_OPENAPI for Python functions).
_JSON_TYPES = {
    "integer": "integer",
    "float": "number",
    "number": "number",
    "string": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "dict": "object",
    "object": "object",
    "any": "string",
}


def json_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """A BFCL parameter schema as JSON schema: types mapped, recursively through properties and items."""
    schema = copy.deepcopy(parameters)
    if not isinstance(schema, dict):
        return {"type": "string"}
    declared = schema.get("type")
    schema["type"] = _JSON_TYPES.get(str(declared), "string") if declared is not None else "string"
    if isinstance(schema.get("properties"), dict):
        schema["properties"] = {name: json_schema(sub) for name, sub in schema["properties"].items()}
    if isinstance(schema.get("items"), dict):
        schema["items"] = json_schema(schema["items"])
    return schema


def tool_name(function_name: str) -> str:
    """The name a BFCL function is offered under: dots become underscores (as BFCL does for OpenAI-style names)."""
    return function_name.replace(".", "_")


def _not_executed(**_: Any) -> str:
    return "BFCL functions are not executed: the call itself is what is judged"


def case_tools(case: BfclCase) -> ToolRegistry:
    """The case's functions as tools (schemas only; running one returns a note, and evaluation never runs them)."""
    registry = ToolRegistry()
    for function in case.functions:
        parameters = json_schema(function.get("parameters", {"type": "dict", "properties": {}}))
        parameters["type"] = "object"
        registry.register(
            Tool(
                name=tool_name(function["name"]),
                description=str(function.get("description") or function["name"]),
                parameters=parameters,
                func=_not_executed,
            )
        )
    return registry


def first_call(text: str, registry: ToolRegistry) -> dict[str, Any] | None:
    """The first call the parser reads in `text`, as `{"name", "arguments"}`; None when there is none."""
    parsed = parse_tool_calls(text, tool_names=registry.names())
    if not parsed.calls:
        return None
    call = parsed.calls[0]
    return {"name": call.name, "arguments": call.arguments}


def judge_text(
    case: BfclCase, text: str, registry: ToolRegistry | None = None
) -> tuple[dict[str, Any] | None, Verdict]:
    """(the parsed first call, BFCL's verdict on it) for a model's reply to `case` (for a case that expects no call,
    `irrelevance`: right when there is none)."""
    call = first_call(text, registry or case_tools(case))
    if case.expects_no_call:
        return call, check_no_call(call)
    return call, check_call(case.functions, case.possible_answer, call)


def call_text(call: dict[str, Any]) -> str:
    """A call in the exact format of the system prompt: `<tool_call>{"name": ..., "arguments": ...}</tool_call>`."""
    payload = json.dumps({"name": call["name"], "arguments": call["arguments"]}, ensure_ascii=False)
    return f"<tool_call>{payload}</tool_call>"


class CaseResult(BaseModel):
    """One case, as written to `--out` (one JSON line each): enough to read a failure and to re-score it."""

    id: str
    category: str
    mode: Mode
    text: str = Field(description="the model's raw reply")
    call: dict[str, Any] | None = Field(description='the first parsed call, {"name", "arguments"}, or null')
    valid: bool
    reason: str
    error_type: str = ""
    prompt_tokens: int
    seconds: float


class EvalReport(BaseModel):
    """Accuracy, prompt length and speed of one mode on one category and split; `cases` has every case's result.

    On `irrelevance` (no call expected) `tool_call_rate` is the figure that matters: the share of questions where the
    model called an offered function though none fits (accuracy is its complement)."""

    category: str
    split: Split
    mode: Mode
    skill: str | None = None
    k: int = 0
    n: int
    correct: int
    accuracy: float
    tool_call_rate: float = Field(description="share of cases with a parsable call at all")
    prompt_tokens_mean: float
    seconds_per_case: float
    cases: list[CaseResult] = Field(default_factory=list, exclude=True)

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def write_cases(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(case.model_dump_json() + "\n" for case in self.cases))


def _check_mode(mode: str, skill: str | None) -> Mode:
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    if mode == "skill" and not skill:
        raise UserError("mode 'skill' needs a skill", hint="pass --skill NAME (e.g. tool-habits)")
    return mode


def skill_list(skill: str) -> list[str]:
    """The skills a `--skill` value names: `tool-habits`, a pinned revision `tool-habits@2`, or a composition
    `tool-habits+multiple-habits` (their sum, see skills.compose)."""
    parts = [part.strip() for part in skill.split("+")]
    if not all(parts):
        raise UserError(f"--skill {skill!r} has an empty part", hint="join skill names with '+', e.g. a+b")
    return [ref.format() for ref in SkillRef.parse("+".join(parts))]


def skill_revisions(agent: Any, skill: str) -> list[tuple[str, Any]]:
    """Each skill a `--skill` value names (see `skill_list`) with the revision it runs at, read through the agent's
    view (an instance's view also reads its personal skills); an unknown skill or revision is an error here."""
    skills = getattr(agent, "skills", agent.store)
    revisions = []
    for part in skill_list(skill):
        ref = SkillRef.parse_one(part)
        name = skills.canonical(ref.qualified) if isinstance(skills, LayeredStore) else ref.qualified
        revisions.append((part, skills.revision(name, ref.revision)))
    return revisions


def _run_kwargs(
    case: BfclCase, registry: ToolRegistry, mode: Mode, skill: str | None, k: int, temperature: float
) -> dict[str, Any]:
    return {
        "task": case.task,
        "skills": skill_list(skill) if mode == "skill" and skill else [],
        "tools": registry,
        "max_steps": 1,
        "temperature": temperature,
        "examples": k if mode == "retrieval" else 0,
    }


def _judged(case: BfclCase, registry: ToolRegistry, mode: Mode, result: Any, seconds: float) -> CaseResult:
    text = next((s.text or "" for s in result.steps if s.kind == "model"), "")
    call, verdict = judge_text(case, text, registry)
    return CaseResult(
        id=case.id,
        category=case.category,
        mode=mode,
        text=text,
        call=call,
        valid=verdict.valid,
        reason=verdict.reason,
        error_type=verdict.error_type,
        prompt_tokens=result.trajectory.prompt_tokens,
        seconds=seconds,
    )


def run_cases(
    agent: Any,
    cases: Sequence[BfclCase],
    *,
    mode: Mode,
    skill: str | None = None,
    k: int = 3,
    temperature: float = 0.0,
    keep: bool = False,
) -> list[tuple[CaseResult, Any]]:
    """Several cases as one `agent.run_batch` (their generation steps are one batch for the model); each case's
    result and `RunResult`, in order. A case's `seconds` is the batch's wall time shared equally: what a case costs
    at this batch size. The runs leave the buffer unless `keep`."""
    if not cases:
        return []
    registries = [case_tools(case) for case in cases]
    started = time.perf_counter()
    runs = agent.run_batch(
        [_run_kwargs(c, r, mode, skill, k, temperature) for c, r in zip(cases, registries, strict=True)],
        concurrency=len(cases),
    )
    seconds = (time.perf_counter() - started) / len(cases)
    if not keep:
        agent.buffer.discard([run.run_id for run in runs])
    return [
        (_judged(case, registry, mode, run, seconds), run)
        for case, registry, run in zip(cases, registries, runs, strict=True)
    ]


def run_case(
    agent: Any,
    case: BfclCase,
    *,
    mode: Mode,
    skill: str | None = None,
    k: int = 3,
    temperature: float = 0.0,
    keep: bool = False,
) -> tuple[CaseResult, Any]:
    """One case through `agent.run`; returns its result and the `RunResult`. The run leaves the buffer unless `keep`."""
    registry = case_tools(case)
    started = time.perf_counter()
    result = agent.run(**_run_kwargs(case, registry, mode, skill, k, temperature))
    seconds = time.perf_counter() - started
    if not keep:
        agent.buffer.discard([result.run_id])
    return _judged(case, registry, mode, result, seconds), result


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` in consecutive slices of at most `size` (the batches the model answers at once)."""
    if size < 1:
        raise UserError("the batch size must be at least 1")
    return [items[i : i + size] for i in range(0, len(items), size)]


def evaluate(
    agent: Any,
    category: str,
    split: Split = "test",
    limit: int | None = None,
    mode: str = "base",
    skill: str | None = None,
    k: int = 3,
    *,
    cases: Sequence[BfclCase] | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
    batch: int = 8,
) -> EvalReport:
    """Run the cases of `category`/`split` (the first `limit`; or the `cases` given) through the agent in one mode,
    `batch` cases at a time as one `Agent.run_batch` (1: one `Agent.run` per case). Greedy decoding gives the same
    verdicts either way; a batch is faster per case on the CPU."""
    checked = _check_mode(mode, skill)
    if checked == "skill":
        skill_revisions(agent, skill or "")  # an unknown skill or revision fails here, before any case runs
    if cases is None:
        cases = load_cases(agent.settings.home, category, split, limit=limit)
    results = []
    for chunk in chunks(cases, batch):
        if batch == 1:
            outcomes = [run_case(agent, chunk[0], mode=checked, skill=skill, k=k)]
        else:
            outcomes = run_cases(agent, chunk, mode=checked, skill=skill, k=k)
        for outcome, _ in outcomes:
            results.append(outcome)
            if on_case is not None:
                on_case(outcome)
    n = len(results)
    correct = sum(r.valid for r in results)
    return EvalReport(
        category=category,
        split=split,
        mode=checked,
        skill=skill if checked == "skill" else None,
        k=k if checked == "retrieval" else 0,
        n=n,
        correct=correct,
        accuracy=correct / n if n else 0.0,
        tool_call_rate=sum(r.call is not None for r in results) / n if n else 0.0,
        prompt_tokens_mean=sum(r.prompt_tokens for r in results) / n if n else 0.0,
        seconds_per_case=sum(r.seconds for r in results) / n if n else 0.0,
        cases=results,
    )
