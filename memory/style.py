"""A coding style, measured by a tool made for it: the ruff rules a repository passes, and the check of code against
them.

A style skill (`agent.style.learn_style`) is only as real as its measure. Rather than a judge of our own, the measure
is ruff: `discover_rules` runs it over a repository's functions, each checked on its own exactly as a generated
function is, with every rule of the style families in `FAMILIES` (annotations, docstrings with a pydocstyle
convention, naming, pyupgrade, quotes, pycodestyle with a line length, simplifications, returns, comprehensions);
the rules that at most `max_violation_share` of the functions break are the style (`StyleRules`: the families
selected, the rules the repository does not follow ignored, the convention and the line length that fit it best).
`check_code` then says, for any code, which of those rules it breaks: code is "in style" when it breaks none.

ruff runs as a subprocess on files in a temporary folder, never on the caller's; `--isolated`, so no configuration
file of the folder being checked (or of this repository) changes what a rule means.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from skills.errors import OperatorError

# The rule families a coding style is made of (ruff's prefixes). Not pyflakes (F) nor isort (I): a function checked
# on its own has names it does not define and no imports to sort; those say nothing about its style.
FAMILIES = ("ANN", "D", "N", "UP", "Q", "E", "W", "SIM", "RET", "C4", "PIE")
# Rules about a file, not a function: a function on its own is not a module or a package.
NOT_FOR_A_FUNCTION = ("D100", "D104")
CONVENTIONS = ("google", "numpy", "pep257")
LINE_LENGTHS = (79, 88, 100, 120)
SYNTAX_ERROR = "invalid-syntax"  # what ruff reports (as a code) for text that does not parse
NO_FUNCTION = "no-function"  # code that parses but defines no function: not a function in any style
_LINE_TOO_LONG = re.compile(r"\((\d+) > \d+\)")
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


class StyleRules(BaseModel):
    """A repository's style as ruff rules: `select` the families, minus `ignore` (rules it does not follow), with its
    pydocstyle `convention` and `line_length`; `functions` is how many functions the rules were found on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    select: tuple[str, ...] = Field(description="ruff rule families (prefixes) of the style")
    ignore: tuple[str, ...] = Field((), description="rules of those families the repository does not follow")
    convention: str | None = Field(None, description="pydocstyle convention of the D rules (google, numpy, pep257)")
    line_length: int = Field(88, ge=40, le=400)
    functions: int = Field(0, ge=0, description="functions of the repository the rules were found on")
    max_violation_share: float = Field(0.1, ge=0.0, le=1.0, description="what share of them a kept rule may break")

    def ruff_args(self) -> list[str]:
        """The rules as ruff's command-line options."""
        args = ["--select", ",".join(self.select), "--line-length", str(self.line_length)]
        ignore = sorted(set(self.ignore) | set(NOT_FOR_A_FUNCTION))
        args += ["--ignore", ",".join(ignore)]
        if self.convention is not None:
            args += ["--config", f"lint.pydocstyle.convention = {json.dumps(self.convention)}"]
        return args

    def describe(self) -> str:
        """One line for people: the families, the convention, the line length, the rules left out."""
        ignored = f"; not: {', '.join(self.ignore)}" if self.ignore else ""
        convention = f", {self.convention} docstrings" if self.convention else ""
        return f"ruff {','.join(self.select)}{convention}, lines <= {self.line_length}{ignored}"


class StyleCheck(BaseModel):
    """What ruff found in one piece of code under a style's rules: the codes of its violations, one per finding
    (`invalid-syntax` when it does not parse, `no-function` when it defines no function, e.g. an empty reply)."""

    model_config = ConfigDict(frozen=True)

    violations: tuple[str, ...] = ()

    @property
    def in_style(self) -> bool:
        return not self.violations

    def families(self) -> Counter[str]:
        """Violations counted by rule family (`ANN201` -> `ANN`; a syntax error is its own family)."""
        return Counter(family_of(code) for code in self.violations)


def family_of(code: str) -> str:
    """The family of a ruff rule code: its prefix among `FAMILIES` (`ANN001` -> `ANN`, `C401` -> `C4`), else its
    leading letters."""
    if code in (SYNTAX_ERROR, NO_FUNCTION):
        return "syntax" if code == SYNTAX_ERROR else code
    for family in sorted(FAMILIES, key=len, reverse=True):
        if code.startswith(family) and code[len(family) :].isdigit():
            return family
    letters = re.match(r"[A-Z]+", code)
    return letters.group(0) if letters else code


def code_of(reply: str) -> str:
    """The code in a model's reply: its first fenced block (```python or bare ```; an unclosed fence runs to the
    end), else the whole reply."""
    match = _FENCE.search(reply)
    return (match.group(1) if match else reply).strip("\n")


@cache
def ruff_binary() -> str:
    """The ruff executable of the installed `ruff` package (a dependency of habitloop)."""
    try:
        from ruff.__main__ import find_ruff_bin
    except ImportError as error:
        raise OperatorError("ruff is not installed", hint="pip install ruff (habitloop depends on it)") from error
    return str(find_ruff_bin())


def run_ruff(codes: Sequence[str], args: Sequence[str]) -> list[list[dict[str, object]]]:
    """ruff's JSON findings for each piece of code, in order: each written to its own file in a temporary folder,
    all checked by one ruff process."""
    if not codes:
        return []
    with tempfile.TemporaryDirectory(prefix="habitloop-ruff-") as folder:
        paths = [Path(folder) / f"f{i:05d}.py" for i in range(len(codes))]
        for path, code in zip(paths, codes, strict=True):
            path.write_text(code if code.endswith("\n") else code + "\n")
        command = [ruff_binary(), "check", "--isolated", "--no-cache", "--output-format", "json", "--exit-zero"]
        try:
            done = subprocess.run([*command, *args, folder], capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired as error:
            raise OperatorError("ruff did not finish in 300 s") from error
        if done.returncode != 0:
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise OperatorError(f"ruff failed: {detail}", hint="check the style's rules (ruff --help)")
        findings: dict[str, list[dict[str, object]]] = {str(p): [] for p in paths}
        for finding in json.loads(done.stdout or "[]"):
            findings.setdefault(str(finding["filename"]), []).append(finding)
        return [findings[str(p)] for p in paths]


def check_code(codes: Sequence[str], rules: StyleRules) -> list[StyleCheck]:
    """Which of the style's rules each piece of code breaks (one ruff run for all of them)."""
    return [
        StyleCheck(violations=tuple(str(f["code"] or SYNTAX_ERROR) for f in found) + _no_function(code))
        for code, found in zip(codes, run_ruff(codes, rules.ruff_args()), strict=True)
    ]


def _no_function(code: str) -> tuple[str, ...]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return ()  # ruff reports it
    defines = any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) for node in ast.walk(tree))
    return () if defines else (NO_FUNCTION,)


def in_style(rules: StyleRules) -> Callable[[str, str], bool]:
    """A reply judge for the consolidation gate (`Scorer(match=...)`): the reply's code breaks none of the rules
    (the wanted reply is not compared: any function in the style passes)."""

    def match(got: str, _wanted: str) -> bool:
        return check_code([code_of(got)], rules)[0].in_style

    return match


def discover_rules(functions: Sequence[str], *, max_violation_share: float = 0.1) -> StyleRules:
    """The style of these functions' source: every rule of `FAMILIES` broken by at most `max_violation_share` of
    them, with the pydocstyle convention they break least and the shortest usual line length they keep to."""
    if not functions:
        raise OperatorError("no functions to find a style in")
    n = len(functions)
    allowed = max_violation_share * n
    by_convention = {}
    for convention in CONVENTIONS:
        args = ["--select", ",".join(FAMILIES), "--ignore", ",".join(NOT_FOR_A_FUNCTION), "--line-length", "79"]
        args += ["--config", f"lint.pydocstyle.convention = {json.dumps(convention)}"]
        by_convention[convention] = run_ruff(functions, args)
    convention = min(CONVENTIONS, key=lambda c: _functions_breaking(by_convention[c], "D"))
    findings = by_convention[convention]
    line_length = next((length for length in LINE_LENGTHS if _too_long(findings, length) <= allowed), max(LINE_LENGTHS))
    broken: Counter[str] = Counter()
    for found in findings:
        codes = {str(f["code"]) for f in found if f["code"] != "E501"}
        broken.update(codes - {SYNTAX_ERROR, "None"})
    ignore = sorted(code for code, count in broken.items() if count > allowed)
    if _too_long(findings, line_length) > allowed:
        ignore.append("E501")
    return StyleRules(
        select=FAMILIES,
        ignore=tuple(sorted(ignore)),
        convention=convention,
        line_length=line_length,
        functions=n,
        max_violation_share=max_violation_share,
    )


def _functions_breaking(findings: list[list[dict[str, object]]], family: str) -> int:
    return sum(any(family_of(str(f["code"])) == family for f in found) for found in findings)


def _too_long(findings: list[list[dict[str, object]]], length: int) -> int:
    """How many functions have a line longer than `length` (read from E501 findings at the shortest length)."""
    count = 0
    for found in findings:
        longest = max(
            (int(m.group(1)) for f in found if f["code"] == "E501" if (m := _LINE_TOO_LONG.search(str(f["message"])))),
            default=0,
        )
        count += longest > length
    return count
