"""BFCL data, offline: found in the `bfcl-eval` wheel, extracted once into `$HABITLOOP_HOME/bfcl/`, read as models.

The wheel is only ever read as a zip file, never installed: its pinned dependencies conflict with ours (DESIGN.md).
Where it comes from, in order: `HABITLOOP_BFCL_WHEEL` (a path), a copy already in `$HABITLOOP_HOME/bfcl/` (or in the
default home's, where `make setup` puts it), else `python -m pip download --no-deps` into `$HABITLOOP_HOME/bfcl/`
(`agent.evals.wheel`, shared with HumanEval).

Each case is split into train or test by the parity of the first byte of sha256(id) (even: train, odd: test), so the
split never depends on the order of the file or on which other cases exist: a test item is never trained on.

`irrelevance` (`NO_CALL_CATEGORIES`) is the other side of a tool habit: task-like questions whose offered functions do
not fit them, with no possible-answer file; the right reply calls nothing. It is split the same way, measured and
never trained on (practice and demonstrations refuse its cases, whatever the split).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.evals.wheel import DataWheel
from skills.errors import OperatorError, UserError
from skills.files import atomic_write_bytes

BFCL_VERSION = "2026.3.23"
WHEEL_NAME = f"bfcl_eval-{BFCL_VERSION}-py3-none-any.whl"
WHEEL_ENV = "HABITLOOP_BFCL_WHEEL"
BFCL = DataWheel("bfcl-eval", BFCL_VERSION, WHEEL_NAME, WHEEL_ENV, "bfcl", label="BFCL", size="~2 MB")
DATA_PREFIX = "bfcl_eval/data/"
# The single-turn Python categories that have possible answers: one expected call per case. (The parallel ones
# expect several calls and the harness judges the first call only, so they are left out.)
CATEGORIES = ("simple_python", "multiple", "live_simple", "live_multiple")
# Categories whose right answer is no call at all (no possible_answer file): what a habit must leave alone.
NO_CALL_CATEGORIES = ("irrelevance",)
Split = Literal["train", "test", "all"]


class Message(BaseModel):
    """One message of a case's question (BFCL writes them in OpenAI's chat format)."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str


class BfclCase(BaseModel):
    """One BFCL case: the question, the functions offered, and every acceptable call.

    `possible_answer` is BFCL's ground truth as is: a list of `{function name: {parameter: [acceptable values]}}`,
    where `""` among a parameter's values means it may be omitted; empty for a case that expects no call.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="BFCL's case id, e.g. simple_python_0")
    category: str
    question: list[list[Message]] = Field(description="turns, each a list of messages (single-turn: one turn)")
    functions: list[dict[str, Any]] = Field(description="the functions offered, in BFCL's JSON format")
    possible_answer: list[dict[str, dict[str, list[Any]]]]

    @property
    def split(self) -> Literal["train", "test"]:
        return split_of(self.id)

    @property
    def expects_no_call(self) -> bool:
        """Whether the right reply calls nothing (`NO_CALL_CATEGORIES`: none of the offered functions fits)."""
        return self.category in NO_CALL_CATEGORIES

    @property
    def task(self) -> str:
        """The text the agent receives: the question's user messages (a system message of the case goes first)."""
        messages = self.question[0] if self.question else []
        return "\n".join(m.content for m in messages if m.role in ("system", "user")).strip()

    def ground_truth(self, *, state_optional: bool = False) -> dict[str, Any]:
        """One correct call as `{"name", "arguments"}`: the first acceptable value of each parameter.

        Optional parameters (those whose acceptable values include "") are left out by default. With
        `state_optional`, each one that also has a value (e.g. "at a significance level of 0.05", or a default the
        answer lists) is stated: BFCL accepts both, and a case that names the value requires it.
        """
        if not self.possible_answer:
            raise UserError(
                f"{self.id} has no ground-truth call", hint="its right reply calls nothing; never train on it"
            )
        ((name, params),) = self.possible_answer[0].items()
        function = next((f for f in self.functions if f.get("name") == name), {})
        required = set(function.get("parameters", {}).get("required", []))
        return {"name": name, "arguments": _first_values(params, required, state_optional)}


def _first_values(params: dict[str, Any], required: set[str], state_optional: bool) -> dict[str, Any]:
    """The first acceptable value of each parameter, nested dicts too; optional ones ("" acceptable) left out unless
    `state_optional` or the function requires them (a few BFCL cases mark a required parameter optional)."""
    arguments: dict[str, Any] = {}
    for key, values in params.items():
        if not isinstance(values, list):  # a few live_* answers nest plain values, not lists of them
            arguments[key] = values
            continue
        present = [v for v in values if v != ""]
        if not present or ("" in values and key not in required and not state_optional):
            continue
        arguments[key] = _resolve(present[0], state_optional)
    return arguments


def _resolve(value: Any, state_optional: bool) -> Any:
    """A possible answer's dict holds lists of acceptable values per key: pick the first of each."""
    if isinstance(value, dict):
        return _first_values(value, set(), state_optional)
    if isinstance(value, list):
        return [_resolve(item, state_optional) if isinstance(item, dict) else item for item in value]
    return value


def split_of(case_id: str) -> Literal["train", "test"]:
    """train if the first byte of sha256(id) is even, test if odd (DESIGN.md)."""
    return "train" if hashlib.sha256(case_id.encode()).digest()[0] % 2 == 0 else "test"


def check_category(category: str) -> str:
    if category not in CATEGORIES + NO_CALL_CATEGORIES:
        known = ", ".join(CATEGORIES + NO_CALL_CATEGORIES)
        raise UserError(f"unsupported BFCL category {category!r}", hint=f"use one of: {known} (single-turn Python)")
    return category


def bfcl_dir(home: Path) -> Path:
    return BFCL.cache(home)


def find_wheel(home: Path, *, download: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """The bfcl-eval wheel: from `HABITLOOP_BFCL_WHEEL`, the cache, or downloaded with pip (`--no-deps`)."""
    return BFCL.find(home, download=download, log=log)


def download_wheel(target: Path, *, log: Callable[[str], None] | None = None) -> Path:
    """`pip download --no-deps bfcl-eval==VERSION` into `target` (PyPI only; ~2 MB)."""
    return BFCL.download(target, log=log)


def data_files(category: str) -> tuple[str, ...]:
    """The wheel members holding a category's cases and its possible answers (none for `NO_CALL_CATEGORIES`)."""
    name = f"BFCL_v4_{check_category(category)}.json"
    if category in NO_CALL_CATEGORIES:
        return (DATA_PREFIX + name,)
    return DATA_PREFIX + name, DATA_PREFIX + "possible_answer/" + name


def extract(home: Path, categories: Iterable[str] = CATEGORIES, *, download: bool = True) -> Path:
    """Extract the categories' JSON files from the wheel into `$HABITLOOP_HOME/bfcl/data/` (atomic; skipped when
    already there). Returns that folder."""
    return extract_members(
        home, [member for category in categories for member in data_files(category)], download=download
    )


def extract_members(home: Path, members: Iterable[str], *, download: bool = True) -> Path:
    """Extract these wheel members (paths under `bfcl_eval/data/`) into `$HABITLOOP_HOME/bfcl/data/`, keeping their
    relative paths (atomic; those already there are skipped). Returns that folder. Other evaluations on the same
    wheel (BFCL memory) name their own members."""
    out = bfcl_dir(home) / "data"
    missing = [m for m in members if not (out / m.removeprefix(DATA_PREFIX)).is_file()]
    if not missing:
        return out
    for member, data in BFCL.read_all(home, missing, download=download).items():
        atomic_write_bytes(out / member.removeprefix(DATA_PREFIX), data)
    return out


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a BFCL data file (one per line); an unreadable file is an operator's error with the fix."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as error:
        hint = f"delete {path.parent}; it is extracted again"
        raise OperatorError(f"cannot read {path}: {error}", hint=hint) from error


def load_cases(
    home: Path, category: str, split: Split = "all", *, limit: int | None = None, download: bool = True
) -> list[BfclCase]:
    """The cases of one category (in BFCL's order), restricted to a split, the first `limit` of them."""
    data = extract(home, [category], download=download)
    questions_file, *answers_file = (data / m.removeprefix(DATA_PREFIX) for m in data_files(category))
    answers = {row["id"]: row["ground_truth"] for path in answers_file for row in read_lines(path)}
    cases = []
    for row in read_lines(questions_file):
        if answers_file and row["id"] not in answers:
            continue
        case = BfclCase(
            id=row["id"],
            category=category,
            question=row["question"],
            functions=row["function"],
            possible_answer=answers.get(row["id"], []),
        )
        if split == "all" or case.split == split:
            cases.append(case)
    return cases[:limit] if limit is not None else cases


if (
    __name__ == "__main__"
):  # `python -m agent.evals.bfcl.data`: fetch and extract now (make setup), so nothing waits later
    from agent.config import Settings

    folder = extract(Settings().home, CATEGORIES + NO_CALL_CATEGORIES)
    print(f"BFCL data ready in {folder}")
