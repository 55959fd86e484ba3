"""The house rules, read from the source with `ast` (docs/architecture.md states them).

- The dependency rule: agent -> skills, tools, memory; memory -> skills; skills and tools import no other habitloop
  package, except that tools may raise the one error root (`skills.errors`).
- No import circle between modules, counting imports inside functions (a lazy import still ties two modules).
- No private name crosses a module: `from x import _y` (or from a private module) is how a seam hides; make it public.
- Size: no module over 500 lines, no function over 80 (the training loop is the one exception).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "skills", "tools", "memory")
ALLOWED = {
    "agent": {"agent", "skills", "tools", "memory"},
    "memory": {"memory", "skills"},
    "skills": {"skills"},
    "tools": {"tools"},
}
EXCEPTIONS = {("tools", "skills.errors")}  # the error root lives in the lowest package
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
LONG_FUNCTIONS = {"skills.train.train_lora"}  # the training loop reads best as one piece


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module an imported dotted name lives in (`agent.api.Agent` -> `agent.api`), if it is one of ours."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            module = _resolve(name)
            if module is not None:
                yield module


GRAPH = {module: set(_imports(path)) - {module} for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_source_is_found() -> None:
    assert {"agent.api", "skills.store", "tools", "memory.buffer"} <= set(MODULES), "the walk must see the packages"
    assert "skills.store" in GRAPH["agent.api"], "the walk must see imports"


def test_each_package_imports_only_what_the_rule_allows() -> None:
    broken = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if target.split(".")[0] not in ALLOWED[module.split(".")[0]]
        and (module.split(".")[0], target) not in EXCEPTIONS
    ]
    assert not broken, "\n".join(broken)


def test_no_import_circle() -> None:
    assert not _cycles(GRAPH), _cycles(GRAPH)


def test_the_circle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_is_imported_from_another_module() -> None:
    """Code, tests, examples and scripts use the public names; a shared helper is public where it lives."""
    crossings = []
    for folder in (*PACKAGES, "tests", "examples", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                    continue
                if node.module.split(".")[0] not in PACKAGES:
                    continue
                private_module = any(part.startswith("_") for part in node.module.split("."))
                for alias in node.names:
                    if private_module or (alias.name.startswith("_") and not alias.name.startswith("__")):
                        crossings.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}")
    assert not crossings, "\n".join(crossings)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module: str) -> None:
    source = MODULES[module].read_text()
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines: split it along its seams"
    long = [
        f"{module}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and f"{module}.{node.name}" not in LONG_FUNCTIONS
    ]
    assert not long, f"name its steps: {long}"
