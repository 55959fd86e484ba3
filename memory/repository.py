"""A repository's code as demonstrations of its style: its module-level functions, read with `ast`, each turned into
the request a user would make for it and the function's source as the answer.

The request names the function and its parameters (names only: the style, not the request, must say whether
parameters are annotated) and gives the first paragraph of its docstring; HumanEval's problems are asked the same way
(`request_for`), so what the skill learned is what it is measured on. Functions without a docstring say nothing a
request could be made of: they count for the rules (`memory.style.discover_rules`), not as demonstrations.

A function can also be taught as it would stand alone (`learn-style --self-contained`): the standard-library imports
of its module that it uses come with it (`imports`), and what its body calls that neither it, the builtins nor the
standard library define (its module's helpers, the project's own imports) is kept as `unresolved`; only the
functions with none are taught. A demonstration that calls names the request never gave may teach a model to call
names that do not exist where it writes (the python-style skill raised the project's `UserError` in HumanEval
answers). Measured on HumanEval's train half it did not help (README, Coding style), so it is not the default.

The repository is a folder or an installed package's name. Its test files are left out (tests are written in
another style: no docstrings, no annotations). Where it came from is kept (`StyleSource`: the path, the git commit
or the package's version, every file's sha256), and goes into the skill's provenance.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib.metadata
import importlib.util
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from memory.trajectory import Trajectory
from skills.errors import UserError

log = logging.getLogger("habitloop.style")
MAX_FILES = 5000
MAX_FILE_BYTES = 1_000_000
_SKIPPED_DIRS = {"tests", "test", "build", "dist", "site-packages", "node_modules", "__pycache__", "venv"}
_BUILTINS = frozenset(dir(builtins))
_STDLIB = frozenset(sys.stdlib_module_names)


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
    (empty: none), its source (decorators included), the file it is in, the standard-library imports it uses and the
    names its body uses that nothing standard defines."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: tuple[str, ...]
    description: str
    code: str
    file: str
    imports: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()

    @property
    def request(self) -> str:
        return request_for(self.name, self.params, self.description)

    @property
    def self_contained(self) -> bool:
        """Whether the function runs as it is shown (with its imports) outside its repository."""
        return not self.unresolved

    @property
    def answer(self) -> str:
        """The function as a file that stands alone: its imports, then its source."""
        return "\n\n\n".join(("\n".join(self.imports), self.code)) if self.imports else self.code

    def demonstration(self, *, standalone: bool = False) -> Trajectory:
        """The request, answered with the function's source in a fenced block (as a chat model writes code);
        `standalone`: its imports first."""
        return Trajectory.demonstration(self.request, fenced(self.answer if standalone else self.code))


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


def _standard(module: str | None) -> bool:
    """Whether `module` (a dotted name) is part of the standard library (`__future__` is not an import to carry)."""
    return bool(module) and module != "__future__" and str(module).split(".")[0] in _STDLIB


def standard_imports(tree: ast.Module) -> dict[str, tuple[str, str | None]]:
    """The names a module binds by its top-level imports from the standard library: name -> (module, the name
    imported from it; None: `import module`)."""
    bound: dict[str, tuple[str, str | None]] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _standard(alias.name) and (alias.asname or "." not in alias.name):
                    bound[alias.asname or alias.name] = (alias.name, None)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _standard(node.module):
            for alias in node.names:
                if alias.name != "*":
                    bound[alias.asname or alias.name] = (node.module, alias.name)
    return bound


def _is_standard(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and _standard(node.module)
    return all(_standard(alias.name) for alias in node.names)


def _annotations(node: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.expr]:
    for inner in ast.walk(node):
        if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef) and inner.returns is not None:
            yield inner.returns
        elif isinstance(inner, ast.arg | ast.AnnAssign) and inner.annotation is not None:
            yield inner.annotation


def free_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[set[str], set[str]]:
    """The names a function reads but does not bind (builtins left out): those its code runs, and those only its
    annotations name (never run in a module with postponed annotations, as a style's repository may be). What it
    imports itself from outside the standard library counts as read, not bound: it is not there elsewhere."""
    bound: set[str] = set()
    foreign: set[str] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.arg):
            bound.add(inner.arg)
        elif isinstance(inner, ast.Name) and not isinstance(inner.ctx, ast.Load):
            bound.add(inner.id)
        elif isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(inner.name)
        elif isinstance(inner, ast.Import | ast.ImportFrom):
            names = {(alias.asname or alias.name).split(".")[0] for alias in inner.names}
            (bound if _is_standard(inner) else foreign).update(names)
    in_annotations = {id(n) for annotation in _annotations(node) for n in ast.walk(annotation)}
    loads = [n for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    run = ({n.id for n in loads if id(n) not in in_annotations} | foreign) - bound - _BUILTINS
    named = {n.id for n in loads if id(n) in in_annotations} - bound - _BUILTINS - run
    return run, named


def import_lines(names: set[str], available: dict[str, tuple[str, str | None]]) -> tuple[str, ...]:
    """The import statements that bind `names` (those the standard library has), `import` lines first, one
    `from` line per module, sorted."""
    plain = sorted(
        f"import {module}" + (f" as {name}" if name != module else "")
        for name, (module, member) in available.items()
        if name in names and member is None
    )
    members: dict[str, list[str]] = {}
    for name, (module, member) in available.items():
        if name in names and member is not None:
            members.setdefault(module, []).append(member if member == name else f"{member} as {name}")
    froms = [f"from {module} import {', '.join(sorted(found))}" for module, found in sorted(members.items())]
    return (*plain, *froms)


def functions_of(source: str, file: str) -> list[SourceFunction]:
    """The module-level functions of one file's source (none if it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as error:
        log.warning("skipped %s: %s", file, error)
        return []
    lines = source.splitlines()
    available = standard_imports(tree)
    found = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.end_lineno is None:
            continue
        start = min([d.lineno for d in node.decorator_list] + [node.lineno])
        code = "\n".join(lines[start - 1 : node.end_lineno])
        run, named = free_names(node)
        found.append(
            SourceFunction(
                name=node.name,
                params=parameter_names(node),
                description=summary(ast.get_docstring(node)),
                code=code,
                file=file,
                imports=import_lines(run | named, available),
                unresolved=tuple(sorted(run - available.keys())),
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
