"""Built-in tools: a safe calculator and file tools confined to the run's workspace folder.

The calculator walks Python's `ast` with a whitelist (numbers, + - * / // % **, unary signs, parentheses) and
bounds every intermediate result, so neither code (`__import__('os')`) nor a huge power (`9**9**9`) gets through.

The file tools only touch `ctx.workspace`: a path must be relative, may not contain `..`, and must still be inside
the workspace once every symbolic link is resolved. Writes are atomic (temp file in the same folder, then
`os.replace`) and reads and writes are size-limited. Checking and then opening a path is not atomic: the confinement
holds against the model's paths, not against another process racing to swap links in the workspace.
"""

from __future__ import annotations

import ast
import errno
import math
import operator
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath

from tools.context import ToolContext
from tools.errors import ToolError
from tools.tool import Tool, tool

# Limits of the calculator: the text, the nesting of the expression, and every intermediate result.
MAX_EXPRESSION_CHARS = 1_000
MAX_DEPTH = 50
MAX_MAGNITUDE = 1e300
# Limits of the file tools, in bytes of UTF-8, and of one listing.
MAX_FILE_BYTES = 1 << 20
MAX_LIST_ENTRIES = 1_000

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_REFUSED = {
    ast.Name: "names",
    ast.Call: "function calls",
    ast.Attribute: "attributes",
    ast.Subscript: "subscripts",
    ast.Compare: "comparisons",
    ast.BoolOp: "boolean operators",
    ast.UnaryOp: "unary operators other than + and -",
}


def _check_magnitude(value: Number) -> Number:
    if isinstance(value, float) and math.isnan(value):
        raise ToolError("the result is not a number")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolError(f"the result is too large (the limit is {MAX_MAGNITUDE:g} in absolute value)")
    return value


def _power(base: Number, exponent: Number) -> Number:
    """`base ** exponent`, refused before it is computed when the result would exceed the magnitude limit."""
    if base == 0 and exponent < 0:
        raise ToolError("division by zero (0 raised to a negative power)")
    if abs(base) > 1 and exponent > 0 and exponent * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
        raise ToolError(f"the result is too large (the limit is {MAX_MAGNITUDE:g} in absolute value)")
    if base < 0 and isinstance(exponent, float) and not exponent.is_integer():
        raise ToolError("a negative number raised to a fractional power is not a real number")
    if 0 < abs(base) < 1 and exponent < 0 and -exponent * math.log10(1 / abs(base)) > math.log10(MAX_MAGNITUDE):
        raise ToolError(f"the result is too large (the limit is {MAX_MAGNITUDE:g} in absolute value)")
    return operator.pow(base, exponent)


def _evaluate(node: ast.AST, depth: int = 0) -> Number:
    if depth > MAX_DEPTH:
        raise ToolError(f"the expression is nested too deeply (more than {MAX_DEPTH} levels)")
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return _check_magnitude(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand, depth + 1))
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, depth + 1)
        right = _evaluate(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            return _check_magnitude(_power(left, right))
        if isinstance(node.op, ast.BitXor):
            raise ToolError("'^' is not a power here; write powers as '**'")
        if type(node.op) not in _BINARY:
            raise ToolError(f"the operator {type(node.op).__name__} is not allowed; use + - * / // % **")
        return _check_magnitude(_BINARY[type(node.op)](left, right))
    what = _REFUSED.get(type(node), f"{type(node).__name__} expressions")
    raise ToolError(f"{what} are not allowed; only numbers, + - * / // % ** and parentheses")


def _format_number(value: Number) -> str:
    return repr(value) if isinstance(value, float) else str(value)


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly as Python would and return the result.

    Supports numbers, + - * / // % ** (power), unary minus and parentheses; nothing else.

    Args:
        expression: the arithmetic to evaluate, e.g. "(2 + 3) * 4 ** 2 / 7".
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError) as error:  # ValueError: a null byte in the text
        raise ToolError(f"not a valid arithmetic expression: {getattr(error, 'msg', error)}") from None
    except (RecursionError, MemoryError):
        raise ToolError("the expression is nested too deeply") from None
    try:
        return _format_number(_evaluate(tree))
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError(f"the result is too large (the limit is {MAX_MAGNITUDE:g} in absolute value)") from None


# ---------------------------------------------------------------------------------------------------------------
# Workspace files.


def _workspace_root(ctx: ToolContext) -> Path:
    if ctx.workspace is None:
        raise ToolError("no workspace folder is configured for this run, so file tools are unavailable")
    try:
        root = ctx.workspace.resolve(strict=True)
    except OSError:
        raise ToolError("the workspace folder does not exist") from None
    if not root.is_dir():
        raise ToolError("the workspace is not a folder")
    return root


def _resolve(ctx: ToolContext, path: str) -> tuple[Path, Path]:
    """(workspace root, the real path `path` names inside it); `ToolError` for anything that could leave it."""
    root = _workspace_root(ctx)
    if not path or not path.strip():
        raise ToolError("the path is empty; give a path relative to the workspace, e.g. 'notes.txt'")
    if "\x00" in path:
        raise ToolError("the path contains a null byte")
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute():
        raise ToolError(f"absolute paths are not allowed ({path!r}); give a path relative to the workspace")
    if path.startswith("~"):
        raise ToolError(f"'~' (a home folder) is not available ({path!r}); give a path relative to the workspace")
    if ".." in PurePosixPath(path.replace("\\", "/")).parts:
        raise ToolError(f"'..' is not allowed in paths ({path!r}); stay inside the workspace")
    try:
        real = (root / path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on older Pythons
        raise ToolError(f"cannot resolve {path!r}") from None
    if not real.is_relative_to(root):
        raise ToolError(f"{path!r} leads outside the workspace through a symbolic link; access refused")
    return root, real


def _relative(root: Path, real: Path) -> str:
    return real.relative_to(root).as_posix() or "."


@tool
def workspace_read(path: str, ctx: ToolContext) -> str:
    """Read a UTF-8 text file from the workspace folder.

    Args:
        path: the file's path relative to the workspace, e.g. "notes/todo.md".
    """
    root, real = _resolve(ctx, path)
    try:
        # O_NOFOLLOW: the final component was resolved above, a link there now means it was swapped in meanwhile.
        # O_NONBLOCK: opening a FIFO must not block the agent; it is refused below as not a regular file.
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ToolError(f"no such file in the workspace: {path!r}") from None
    except IsADirectoryError:
        raise ToolError(f"{path!r} is a folder; use workspace_list") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ToolError(f"{path!r} is a symbolic link that changed while reading; access refused") from None
        raise ToolError(f"cannot open {path!r}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ToolError(f"{path!r} is a folder; use workspace_list")
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"{path!r} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ToolError(f"{path!r} is larger than the read limit of {MAX_FILE_BYTES} bytes")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # +1: a file that grew since fstat is still caught
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ToolError(f"{path!r} is larger than the read limit of {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{path!r} is not UTF-8 text") from None


@tool
def workspace_write(path: str, content: str, ctx: ToolContext) -> str:
    """Write a UTF-8 text file in the workspace folder, replacing it if it exists and creating missing folders.

    Args:
        path: the file's path relative to the workspace, e.g. "notes/todo.md".
        content: the complete new text of the file.
    """
    root, real = _resolve(ctx, path)
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError("the content is not valid Unicode text (it holds a lone surrogate)") from None
    if len(data) > MAX_FILE_BYTES:
        raise ToolError(f"the content is {len(data)} bytes, over the write limit of {MAX_FILE_BYTES} bytes")
    if real == root or real.is_dir():
        raise ToolError(f"{path!r} is a folder; give a file path")
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ToolError(f"a parent of {path!r} is a file, not a folder") from None
    except OSError as error:
        raise ToolError(f"cannot create the folder for {path!r}: {error.strerror}") from None
    # The real parent must still be inside the workspace once it exists (a link could have been created meanwhile).
    if not real.parent.resolve().is_relative_to(root):
        raise ToolError(f"{path!r} leads outside the workspace through a symbolic link; access refused")
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name[:64]}.", suffix=".tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, real)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return f"wrote {len(data)} bytes to {_relative(root, real)}"


@tool
def workspace_list(ctx: ToolContext, path: str = ".") -> str:
    """List a folder of the workspace, one entry per line; folders end with '/'.

    Args:
        path: the folder relative to the workspace; "." (the default) is the workspace itself.
    """
    root, real = _resolve(ctx, path)
    if not real.exists():
        raise ToolError(f"no such folder in the workspace: {path!r}")
    if not real.is_dir():
        raise ToolError(f"{path!r} is a file, not a folder; use workspace_read")
    entries = []
    for entry in sorted(real.iterdir(), key=lambda item: item.name):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            continue  # a write in progress
        entries.append(entry.name + ("/" if entry.is_dir() else ""))
    if not entries:
        return f"{_relative(root, real)}: (empty)"
    shown = entries[:MAX_LIST_ENTRIES]
    more = len(entries) - len(shown)
    return "\n".join(shown) + (f"\n... and {more} more" if more else "")


@tool
def recall(query: str, k: int = 3, *, ctx: ToolContext) -> str:
    """Search your memory of earlier successful tasks similar to a query, with how they were answered.

    Args:
        query: what to look for, e.g. the current task in your own words.
        k: how many earlier tasks to return (1 to 10).
    """
    search = ctx.extras.get("recall")
    if search is None:
        raise ToolError("this agent has no episode memory to search")
    hits = search(query, max(1, min(10, k)))
    if not hits:
        return "nothing similar remembered"
    return "\n".join(f"- task: {task!r} -> answer: {answer!r} (similarity {score:.2f})" for task, answer, score in hits)


def builtin_tools(*, files: bool = True, memory: bool = False) -> list[Tool]:
    """The built-in tools: the calculator, with `files` the workspace file tools, with `memory` the recall tool.

    Nothing is fixed here: each run passes its workspace folder (`ToolContext.workspace`) and, for `recall`, a
    search function over the episode buffer (`ToolContext.extras["recall"]`, a callable (query, k) -> [(task,
    answer, score)]); without them those tools answer with an error result. `tools` never imports `memory`.
    """
    tools = [calculator]
    if files:
        tools += [workspace_read, workspace_write, workspace_list]
    if memory:
        tools.append(recall)
    return tools
