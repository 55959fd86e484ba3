"""A repository's code as demonstrations of its style: its module-level functions, read with `ast`, each turned into
the request a user would make for it and the function's source as the answer.

The request names the function and its parameters (names only: the style, not the request, must say whether
parameters are annotated) and gives the first paragraph of its docstring; HumanEval's problems are asked the same way
(`request_for`), so what the skill learned is what it is measured on. Functions without a docstring say nothing a
request could be made of: they count for the rules (`memory.style.discover_rules`), not as demonstrations.

The repository is a folder or an installed package's name. Its test files are left out (tests are written in
another style: no docstrings, no annotations). Where it came from is kept (`StyleSource`: the path, the git commit
or the package's version, every file's sha256), and goes into the skill's provenance.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import logging
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from memory.trajectory import Trajectory
from skills.errors import UserError

log = logging.getLogger("habitloop.style")
MAX_FILES = 5000
MAX_FILE_BYTES = 1_000_000
_SKIPPED_DIRS = {"tests", "test", "build", "dist", "site-packages", "node_modules", "__pycache__", "venv"}


class StyleSource(BaseModel):
    """Where a style was learned from: the folder read, its git commit or its package and version, its files."""

    model_config = ConfigDict(frozen=True)

    path: str
    package: str | None = None
    version: str | None = None
    commit: str | None = None
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256 of the file's bytes")


class SourceFunction(BaseModel):
    """One module-level function of the repository: its name, parameter names, the first paragraph of its docstring
    (empty: none), its source (decorators included) and the file it is in."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: tuple[str, ...]
    description: str
    code: str
    file: str

    @property
    def request(self) -> str:
        return request_for(self.name, self.params, self.description)

    def demonstration(self) -> Trajectory:
        """The request, answered with the function's source in a fenced block (as a chat model writes code)."""
        return Trajectory.demonstration(self.request, fenced(self.code))


def request_for(name: str, params: tuple[str, ...] | list[str], description: str) -> str:
    """How a user asks for a function: "Write a Python function `name(a, b)`: <what it does>"."""
    described = " ".join(description.split()).removesuffix(":")
    if described and described[-1] not in ".!?":
        described += "."
    return f"Write a Python function `{name}({', '.join(params)})`" + (f": {described}" if described else ".")


def fenced(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def parameter_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ...]:
    """The parameters as a caller sees them (no `self`/`cls`), `*args` and `**kwargs` marked."""
    args = node.args
    names = [a.arg for a in [*args.posonlyargs, *args.args]]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    if args.vararg is not None:
        names.append("*" + args.vararg.arg)
    names += [a.arg for a in args.kwonlyargs]
    if args.kwarg is not None:
        names.append("**" + args.kwarg.arg)
    return tuple(names)


def summary(docstring: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    if not docstring:
        return ""
    return " ".join(docstring.strip().split("\n\n")[0].split())


def functions_of(source: str, file: str) -> list[SourceFunction]:
    """The module-level functions of one file's source (none if it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as error:
        log.warning("skipped %s: %s", file, error)
        return []
    lines = source.splitlines()
    found = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.end_lineno is None:
            continue
        start = min([d.lineno for d in node.decorator_list] + [node.lineno])
        code = "\n".join(lines[start - 1 : node.end_lineno])
        found.append(
            SourceFunction(
                name=node.name,
                params=parameter_names(node),
                description=summary(ast.get_docstring(node)),
                code=code,
                file=file,
            )
        )
    return found


def locate(source: str) -> tuple[Path, str | None, str | None]:
    """A folder, or an installed package's folder with its distribution and version."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve(), None, None
    if path.suffix == ".py" or "/" in source:
        raise UserError(f"{source} is not a folder", hint="pass a repository's folder or an installed package's name")
    try:
        spec = importlib.util.find_spec(source)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise UserError(f"{source!r} is neither a folder nor an installed package", hint="check the path or name")
    distribution = next(iter(importlib.metadata.packages_distributions().get(source.split(".")[0], [])), None)
    version = importlib.metadata.version(distribution) if distribution else None
    return Path(locations[0]).resolve(), distribution or source, version


def git_commit(folder: Path) -> str | None:
    """The commit checked out at `folder`, when it is in a git repository with a clean work tree of those files."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def python_files(folder: Path) -> list[Path]:
    """The repository's Python files, tests and hidden, build and environment folders left out, in path order."""
    files = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") or p in _SKIPPED_DIRS for p in parts[:-1]):
            continue
        if path.name.startswith("test_") or path.name.endswith("_test.py") or path.name == "conftest.py":
            continue
        if path.is_file() and not path.is_symlink():
            files.append(path)
    if len(files) > MAX_FILES:
        raise UserError(f"{folder} holds {len(files)} Python files (at most {MAX_FILES})", hint="pass a subfolder")
    return files


def read_repository(source: str) -> tuple[StyleSource, list[SourceFunction]]:
    """The repository at `source` (a folder or an installed package): where it came from and its functions."""
    folder, package, version = locate(source)
    hashes: dict[str, str] = {}
    functions: list[SourceFunction] = []
    for path in python_files(folder):
        relative = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        if len(data) > MAX_FILE_BYTES:
            log.warning("skipped %s: larger than %d bytes", relative, MAX_FILE_BYTES)
            continue
        hashes[relative] = hashlib.sha256(data).hexdigest()
        functions += functions_of(data.decode("utf-8", errors="replace"), relative)
    if not functions:
        raise UserError(f"no Python functions found under {folder}", hint="pass a folder that holds Python code")
    origin = StyleSource(path=str(folder), package=package, version=version, commit=git_commit(folder), files=hashes)
    return origin, functions
