"""The built-in tools: the safe calculator and the workspace file tools, including every way out of the workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tools.builtins
from tools import (
    ToolContext,
    ToolRegistry,
    ToolResult,
    builtin_tools,
    calculator,
    workspace_list,
    workspace_read,
    workspace_write,
)


def calc(expression: str) -> ToolResult:
    return calculator.invoke({"expression": expression})


# ---------------------------------------------------------------------------------------------------------------
# Calculator.


@pytest.mark.parametrize(
    ("expression", "output"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("-2 ** 2", "-4"),
        ("2 ** -1", "0.5"),
        ("+-+3", "-3"),
        ("0.1 + 0.2", "0.30000000000000004"),
        ("1_000 * 3", "3000"),
        ("  2**10  ", "1024"),
        ("(-8) ** 2.0", "64.0"),
        ("10 ** 300", "1" + "0" * 300),
        ("1 ** 1000000000", "1"),
        ("2 ** -100000", "0.0"),
    ],
)
def test_calculator_examples(expression: str, output: str) -> None:
    result = calc(expression)
    assert result.ok, result.error
    assert result.output == output


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("9**9**9", "too large"),
        ("10 ** 301", "too large"),
        ("0.5 ** -2000", "too large"),
        ("1e308 * 10", "too large"),
        ("2.0 ** 5000.5", "too large"),
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("1 % 0.0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("(-8) ** (1/3)", "not a real number"),
        ("__import__('os').system('true')", "function calls are not allowed"),
        ("abs(-1)", "function calls are not allowed"),
        ("x + 1", "names are not allowed"),
        ("(1).real", "attributes are not allowed"),
        ("[1][0]", "subscripts are not allowed"),
        ("1 < 2", "comparisons are not allowed"),
        ("1 and 2", "boolean operators are not allowed"),
        ("~1", "unary operators other than + and -"),
        ("not 1", "unary operators other than + and -"),
        ("2 ^ 3", "write powers as '**'"),
        ("2 << 3", "is not allowed"),
        ("True + 1", "only numbers are allowed"),
        ("'a' * 3", "only numbers are allowed"),
        ("1j", "only numbers are allowed"),
        ("lambda: 1", "Lambda expressions are not allowed"),
        ("[1, 2]", "List expressions are not allowed"),
        ("1 +", "not a valid arithmetic expression"),
        ("", "not a valid arithmetic expression"),
        ("1\x00", "not a valid arithmetic expression"),
        ("1;2", "not a valid arithmetic expression"),
        ("1" + "+1" * 600, "longer than 1000 characters"),
        ("-" * 200 + "1", "nested too deeply"),
        ("(" * 250 + "1" + ")" * 250, "too many nested parentheses"),
    ],
)
def test_calculator_refusals(expression: str, fragment: str) -> None:
    result = calc(expression)
    assert not result.ok
    assert result.error is not None and result.error.startswith("tool 'calculator': ")
    assert fragment in result.error


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_calculator_never_raises_on_any_text(expression: str) -> None:
    result = calc(expression)
    assert isinstance(result, ToolResult)
    assert result.ok or (result.error or "").startswith("tool 'calculator': ")


@settings(max_examples=200)
@given(st.text(alphabet="0123456789+-*/%().e_ ", max_size=40))
def test_calculator_never_raises_on_arithmetic_looking_text(expression: str) -> None:
    result = calc(expression)
    assert result.ok or "raised" not in (result.error or ""), result.error  # every refusal is a written message


small_ints = st.integers(-20, 20).map(lambda n: f"({n})" if n < 0 else str(n))
expressions = st.recursive(
    small_ints,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//", "%"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(inner, st.integers(0, 3)).map(lambda t: f"({t[0]} ** {t[1]})"),
        inner.map(lambda e: f"-{e}"),
    ),
    max_leaves=10,
)
flat_expressions = st.lists(
    st.tuples(st.integers(0, 30).map(str), st.sampled_from(["+", "-", "*", "//", "%", "/", "** 2 +"])), min_size=1
).map(lambda pairs: " ".join(f"{number} {op}" for number, op in pairs) + " 1")


@settings(max_examples=300)
@given(st.one_of(expressions, flat_expressions))
def test_calculator_matches_python_on_small_integer_arithmetic(expression: str) -> None:
    try:
        expected = eval(expression, {"__builtins__": {}})  # noqa: S307 - the test's own generated arithmetic
    except ZeroDivisionError:
        result = calc(expression)
        assert not result.ok and "division by zero" in (result.error or "")
        return
    result = calc(expression)
    if abs(expected) > 1e300:
        assert not result.ok and "too large" in (result.error or "")
        return
    assert result.ok, (expression, result.error)
    assert result.output == (repr(expected) if isinstance(expected, float) else str(expected))


# ---------------------------------------------------------------------------------------------------------------
# Workspace files.


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace and, beside it, an outside folder with a secret the tools must never reach."""
    workspace = tmp_path / "ws"
    outside = tmp_path / "outside"
    workspace.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    return workspace, outside


@pytest.fixture
def ctx(layout: tuple[Path, Path]) -> ToolContext:
    return ToolContext(workspace=layout[0])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_write_read_list_round_trip(ctx: ToolContext, layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    written = workspace_write.invoke({"path": "notes/todo.md", "content": "héllo\nworld"}, ctx=ctx)
    assert written.ok and written.output == "wrote 12 bytes to notes/todo.md"
    assert (workspace / "notes" / "todo.md").read_text() == "héllo\nworld"
    assert workspace_read.invoke({"path": "notes/todo.md"}, ctx=ctx).output == "héllo\nworld"
    assert workspace_read.invoke({"path": "./notes//todo.md"}, ctx=ctx).ok
    workspace_write.invoke({"path": "notes/todo.md", "content": "replaced"}, ctx=ctx)
    assert workspace_read.invoke({"path": "notes/todo.md"}, ctx=ctx).output == "replaced"
    (workspace / "a.txt").write_text("a")
    assert workspace_list.invoke({}, ctx=ctx).output == "a.txt\nnotes/"
    assert workspace_list.invoke({"path": "notes"}, ctx=ctx).output == "todo.md"
    (workspace / "empty").mkdir()
    assert workspace_list.invoke({"path": "empty"}, ctx=ctx).output == "empty: (empty)"
    # atomic writes leave no temp files behind
    assert not [p for p in workspace.rglob("*") if p.name.endswith(".tmp")]


def test_symlinks_inside_the_workspace_are_followed(ctx: ToolContext, layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    (workspace / "real").mkdir()
    (workspace / "real" / "f.txt").write_text("inside")
    (workspace / "alias").symlink_to(workspace / "real", target_is_directory=True)
    (workspace / "link.txt").symlink_to(workspace / "real" / "f.txt")
    assert workspace_read.invoke({"path": "alias/f.txt"}, ctx=ctx).output == "inside"
    assert workspace_read.invoke({"path": "link.txt"}, ctx=ctx).output == "inside"
    assert workspace_write.invoke({"path": "link.txt", "content": "via link"}, ctx=ctx).ok
    assert (workspace / "real" / "f.txt").read_text() == "via link"


def test_a_symlinked_workspace_root_works(layout: tuple[Path, Path], tmp_path: Path) -> None:
    workspace, _ = layout
    (tmp_path / "ws-link").symlink_to(workspace, target_is_directory=True)
    linked = ToolContext(workspace=tmp_path / "ws-link")
    assert workspace_write.invoke({"path": "x.txt", "content": "1"}, ctx=linked).ok
    assert (workspace / "x.txt").read_text() == "1"


ESCAPES = [
    ("../outside/secret.txt", "'..' is not allowed"),
    ("../x", "'..' is not allowed"),
    ("notes/../../x", "'..' is not allowed"),
    ("..\\x", "'..' is not allowed"),
    ("/etc/passwd", "absolute paths are not allowed"),
    ("C:\\Windows\\win.ini", "absolute paths are not allowed"),
    ("~/x", "'~'"),
    ("", "the path is empty"),
    ("  ", "the path is empty"),
    ("a\x00b", "null byte"),
    ("out-link/secret.txt", "outside the workspace through a symbolic link"),
    ("out-link/new.txt", "outside the workspace through a symbolic link"),
    ("out-link", "outside the workspace through a symbolic link"),
    ("secret-link.txt", "outside the workspace through a symbolic link"),
    ("dangling-link.txt", "outside the workspace through a symbolic link"),
    ("out-link/deeper/new.txt", "outside the workspace through a symbolic link"),
]


@pytest.fixture
def hostile(layout: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """Links inside the workspace that point out of it: to a folder, to a file, and to a file that does not exist."""
    workspace, outside = layout
    (workspace / "out-link").symlink_to(outside, target_is_directory=True)
    (workspace / "secret-link.txt").symlink_to(outside / "secret.txt")
    (workspace / "dangling-link.txt").symlink_to(outside / "not-yet.txt")
    return layout


@pytest.mark.parametrize(("path", "fragment"), ESCAPES)
def test_escapes_are_refused_and_nothing_outside_changes(
    hostile: tuple[Path, Path], tmp_path: Path, path: str, fragment: str
) -> None:
    workspace, outside = hostile
    ctx = ToolContext(workspace=workspace)
    before = snapshot(tmp_path)
    for result in (
        workspace_write.invoke({"path": path, "content": "pwned"}, ctx=ctx),
        workspace_read.invoke({"path": path}, ctx=ctx),
        workspace_list.invoke({"path": path}, ctx=ctx),
    ):
        assert not result.ok, (result.name, result.output)
        assert fragment in (result.error or ""), result.error
        assert "top secret" not in result.output
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (tmp_path / "x").exists()


def test_file_tools_without_a_workspace(tmp_path: Path) -> None:
    result = workspace_read.invoke({"path": "a.txt"})
    assert not result.ok and "no workspace folder is configured" in (result.error or "")
    missing = ToolContext(workspace=tmp_path / "missing")
    assert "does not exist" in (workspace_list.invoke({}, ctx=missing).error or "")
    (tmp_path / "file").write_text("")
    assert "not a folder" in (workspace_list.invoke({}, ctx=ToolContext(workspace=tmp_path / "file")).error or "")


def test_file_tool_errors(ctx: ToolContext, layout: tuple[Path, Path]) -> None:
    workspace, _ = layout
    (workspace / "dir").mkdir()
    (workspace / "bin.dat").write_bytes(b"\xff\xfe\x00")
    (workspace / "plain.txt").write_text("x")
    cases = [
        (workspace_read, {"path": "nope.txt"}, "no such file"),
        (workspace_read, {"path": "dir"}, "is a folder"),
        (workspace_read, {"path": "bin.dat"}, "not UTF-8 text"),
        (workspace_write, {"path": "dir", "content": "x"}, "is a folder"),
        (workspace_write, {"path": ".", "content": "x"}, "is a folder"),
        (workspace_write, {"path": "plain.txt/child.txt", "content": "x"}, "is a file, not a folder"),
        (workspace_write, {"path": "lone.txt", "content": "\ud800"}, "lone surrogate"),
        (workspace_list, {"path": "plain.txt"}, "is a file, not a folder"),
        (workspace_list, {"path": "nope"}, "no such folder"),
    ]
    for tool_, arguments, fragment in cases:
        result = tool_.invoke(arguments, ctx=ctx)
        assert not result.ok and fragment in (result.error or ""), (arguments, result.error)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_reading_a_fifo_is_refused_without_blocking(ctx: ToolContext, layout: tuple[Path, Path]) -> None:
    os.mkfifo(layout[0] / "pipe")
    result = workspace_read.invoke({"path": "pipe"}, ctx=ctx, timeout=5)
    assert not result.ok and "not a regular file" in (result.error or "")


def test_size_limits(ctx: ToolContext, layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    workspace, _ = layout
    monkeypatch.setattr(tools.builtins, "MAX_FILE_BYTES", 10)
    assert workspace_write.invoke({"path": "ok.txt", "content": "0123456789"}, ctx=ctx).ok
    too_big = workspace_write.invoke({"path": "big.txt", "content": "01234567890"}, ctx=ctx)
    assert not too_big.ok and "over the write limit of 10 bytes" in (too_big.error or "")
    assert not (workspace / "big.txt").exists()
    (workspace / "big.txt").write_text("x" * 11)
    read = workspace_read.invoke({"path": "big.txt"}, ctx=ctx)
    assert not read.ok and "larger than the read limit" in (read.error or "")


def test_listing_is_capped(ctx: ToolContext, layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools.builtins, "MAX_LIST_ENTRIES", 2)
    for name in "abcd":
        (layout[0] / name).write_text("")
    assert workspace_list.invoke({}, ctx=ctx).output == "a\nb\n... and 2 more"


def test_builtin_tools() -> None:
    assert [t.name for t in builtin_tools()] == ["calculator", "workspace_read", "workspace_write", "workspace_list"]
    assert [t.name for t in builtin_tools(files=False)] == ["calculator"]
    registry = ToolRegistry(builtin_tools())
    assert len(registry) == 4
    for schema in registry.schemas():
        assert "ctx" not in schema["function"]["parameters"]["properties"]
