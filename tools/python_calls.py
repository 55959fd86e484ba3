"""Tool calls written as Python: `name(a=1, b="x")`, or a list of them (BFCL's `[f(a=1), g(b=2)]`). Values must
be literals, read with `ast.literal_eval` (`true`/`false`/`null` are accepted too); nothing is evaluated."""

from __future__ import annotations

import ast
import warnings
from typing import Any

from tools.calls import CallFormat, ParsedItem, call_error, make_call, quoted_name, snippet

# The longest text read as Python: longer candidates are not parsed (`ast.parse` is not linear in every input).
MAX_CALL_CHARS = 20_000
_JSON_WORDS = {"true": True, "false": False, "null": None}


class _JsonWords(ast.NodeTransformer):
    """`true`, `false` and `null` as the constants a model meant when it mixed JSON into Python."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _JSON_WORDS:
            return ast.copy_location(ast.Constant(_JSON_WORDS[node.id]), node)
        return node


def _parse_expression(text: str) -> ast.expr | None:
    """`text` as one Python expression, or None; quiet (no SyntaxWarning) and safe on any input."""
    if len(text) > MAX_CALL_CHARS:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def _literal(node: ast.expr) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(_JsonWords().visit(node))
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, OverflowError):
        return False, None


def python_literal(text: str) -> Any:
    """A Python literal (a dict with single quotes, say), or None."""
    node = _parse_expression(text)
    if node is None:
        return None
    ok, value = _literal(node)
    return value if ok else None


def _call_name(node: ast.expr) -> str | None:
    """`a.b.c` for the callee `a.b.c`, or None; a loop, not recursion: the chain may be thousands long."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def python_calls(
    text: str, raw: str, fmt: CallFormat, names: frozenset[str] | None, *, require_literals: bool
) -> list[ParsedItem] | None:
    """The calls in `text` if it is nothing but Python-style calls (one, or a list of them), else None.

    With `names`, every call must name a known tool. With `require_literals`, a call with a non-literal argument
    (`print(x)`) is taken for code, not a call, unless `names` says it is a tool; the model's literal mistakes
    (positional arguments, `**kwargs`) are reported as errors.
    """
    stripped = text.strip().strip("`").strip().rstrip(";").strip()
    if stripped.startswith(("python\n", "py\n")):  # an inline fence's language tag
        stripped = stripped.split("\n", 1)[1]
    node = _parse_expression(stripped)
    if node is None:
        return None
    calls = node.elts if isinstance(node, ast.List | ast.Tuple) and node.elts else [node]
    if not all(isinstance(call, ast.Call) for call in calls):
        return None
    call_nodes = [call for call in calls if isinstance(call, ast.Call)]
    call_names = [_call_name(call.func) for call in call_nodes]
    if any(name is None for name in call_names):
        return None
    if names is not None and not all(name in names for name in call_names):
        return None
    items: list[ParsedItem] = []
    for call, name in zip(call_nodes, call_names, strict=True):
        assert name is not None
        values = [_literal(kw.value) for kw in call.keywords] + [_literal(arg) for arg in call.args]
        if require_literals and names is None and not all(ok for ok, _ in values):
            return None  # code in prose (`print(x)`), not a call attempt
        items.append(_python_call(call, name, raw, fmt))
    return items


def _python_call(call: ast.Call, name: str, raw: str, fmt: CallFormat) -> ParsedItem:
    shown = snippet(name, 60)
    if call.args:
        return call_error(
            f"{shown}(...) has positional arguments; name every argument, e.g. {shown}(argument=value)", raw, fmt, name
        )
    arguments: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            return call_error(f"{shown}(...) unpacks **arguments; write each argument as name=value", raw, fmt, name)
        ok, value = _literal(keyword.value)
        if not ok:
            return call_error(
                f"argument {quoted_name(keyword.arg)} of {shown}(...) is not a literal value (a number, string, list, "
                "dict, True/False/None); expressions and variables cannot be evaluated",
                raw,
                fmt,
                name,
            )
        arguments[keyword.arg] = value
    return make_call(name, arguments, raw, fmt)
