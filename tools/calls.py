"""Tool calls as data, and how they are read out of a model's text.

The canonical format (DESIGN.md, "The tool-call format") is one or more
`<tool_call>{"name": "...", "arguments": {...}}</tool_call>` blocks. Small models drift, so `parse_tool_calls` also
accepts, in this order of precedence:

- `tag`: the canonical block; a missing closing tag is tolerated, `"parameters"` is read as `"arguments"`, an
  OpenAI-style `{"function": {...}}` wrapper and JSON-encoded argument strings are unwrapped, several objects (or a
  JSON list) may share one block, and a Python-style call inside the tags is read too;
- `fenced`: a fenced code block (```json, ```tool_call, ``` or ```python / ```tool_code) holding such a JSON object
  (or a list of them), or holding only Python-style calls;
- `json`: such a JSON object standing on its own lines in the text, without tags or fences;
- `python`: a Python-style call `name(a=1, b="x")` on its own line, or a list of them (BFCL's format
  `[f(a=1), g(b=2)]`). Values must be literals (read with `ast.literal_eval`; `true`/`false`/`null` are accepted).

Everything else is prose. What looks like a call but cannot be read becomes a `CallError` whose `reason` goes back
to the model as an observation: the model's mistakes are data, and `parse_tool_calls` never raises, whatever text it
is given.

Parsing is linear in the text, whatever its shape: every pattern scans each character a bounded number of times (no
`.*` that backtracks over the rest of the text, no run of blanks rescanned from every line start),
and the JSON and Python decoders together read at most `_PARSE_BUDGET_CHARS` characters of one message (plus the one
attempt that crosses it); the rest is not read. Nesting deeper than the decoders' recursion limit is a parse error.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from tools.base import ToolRegistry, valid_text

CallFormat = Literal["tag", "fenced", "json", "python"]
SNIPPET_CHARS = 200
# Bounds on the work spent on one message, so that a pathological text cannot make parsing slow.
_MAX_CANDIDATES = 200
_MAX_CALL_LINES = 30
_MAX_CALL_CHARS = 20_000
# Characters the JSON and Python decoders may read in one message, all stages together.
_PARSE_BUDGET_CHARS = 200_000
# How many ``` inside JSON strings a fenced call may hold (code blocks in its arguments).
_MAX_FENCES_IN_JSON = 8
# Failed attempts reported per message (each becomes an observation); the rest are counted in the last one.
_MAX_ERRORS = 10


class ToolCall(BaseModel):
    """One call the model asked for: which tool, with which arguments, and the text it was read from."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the tool's name, as the model wrote it")
    arguments: dict[str, Any] = Field(default_factory=dict, description="the arguments, not yet validated")
    raw: str = Field("", description="the text the call was read from")
    format: CallFormat = Field("tag", description="how the model wrote the call (see `parse_tool_calls`)")


class CallError(BaseModel):
    """A call that could not be read (`stage="parse"`) or would be refused by its tool (`stage="validate"`)."""

    model_config = ConfigDict(frozen=True)

    reason: str = Field(description="what is wrong, written for the model")
    raw: str = Field("", description=f"the offending text, cut to {SNIPPET_CHARS} characters")
    name: str | None = Field(None, description="the tool the call named, when that much could be read")
    format: CallFormat | None = Field(None, description="the format the call was attempted in, when known")
    stage: Literal["parse", "validate"] = "parse"

    def observation(self) -> str:
        """The text to show the model so it can fix the call."""
        return f"error: {self.reason}"


# `ParseFailure` names the same thing from the parser's side.
ParseFailure = CallError


class ParseResult(BaseModel):
    """What `parse_tool_calls` found in a message: the calls, the failed attempts, and the rest of the text."""

    model_config = ConfigDict(frozen=True)

    calls: list[ToolCall] = Field(default_factory=list, description="well-formed calls, in order of appearance")
    errors: list[CallError] = Field(default_factory=list, description="attempted calls that could not be read")
    text_outside: str = Field("", description="the message without the calls and failed attempts, stripped")

    @property
    def attempted(self) -> bool:
        """Whether the message tried to call a tool at all (well-formed or not)."""
        return bool(self.calls or self.errors)


def parse_tool_calls(text: str, *, tool_names: Collection[str] | None = None) -> ParseResult:
    """Read the tool calls out of a model's message. Never raises.

    Args:
        text: the model's message.
        tool_names: if given, a Python-style call only counts when it names one of these tools; otherwise a line
            like `print(x)` in prose could read as a call. Tagged, fenced and bare JSON calls always count.
    """
    if not isinstance(text, str):
        return ParseResult(errors=[CallError(reason=f"the message is not text but {type(text).__name__}")])
    try:
        names = frozenset(tool_names) if tool_names is not None else None
        return _Parser(text, names).parse()
    except Exception as error:  # a bug of ours; still, the model's text must never crash the agent
        reason = f"internal parser error ({type(error).__name__}: {error}); write calls as <tool_call>JSON</tool_call>"
        return ParseResult(errors=[CallError(reason=reason, raw=_snippet(text))], text_outside=text.strip())


def validate_call(call: ToolCall, registry: ToolRegistry) -> ToolCall | CallError:
    """`call` if the registry has its tool and the tool accepts its arguments, else a `CallError` saying why."""

    def refuse(reason: str) -> CallError:
        return CallError(reason=reason, raw=_snippet(call.raw), name=call.name, format=call.format, stage="validate")

    if call.name not in registry:
        known = ", ".join(registry.names())
        return refuse(
            f"unknown tool {_quoted(call.name)}; " + (f"the tools are: {known}" if known else "no tools exist")
        )
    problem = registry.get(call.name).check_arguments(call.arguments)
    return refuse(problem) if problem is not None else call


# ---------------------------------------------------------------------------------------------------------------


Item = ToolCall | CallError


@dataclass
class _Hit:
    """Items found at text[start:end] (offsets relative to the segment they were searched in)."""

    start: int
    end: int
    items: list[Item]


_OPEN_TAG = re.compile(r"<\s*tool_call\s*>", re.IGNORECASE)
_CLOSE_TAG = re.compile(r"<\s*/\s*tool_call\s*>", re.IGNORECASE)
# A fence: ``` + optional language + the content up to the closing ``` (or the end of the text: a cut-off fence).
_FENCE = re.compile(r"```[ \t]*([A-Za-z][\w+\-]*)?[^\S\n]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_JSON_FENCES = {"", "json", "json5", "jsonc", "tool_call", "tool_calls", "function_call"}
_PYTHON_FENCES = {"", "python", "py", "python3", "tool_code"}
# Text that is clearly meant as a JSON call even when it does not parse: a "name" key, then an "arguments" key.
_NAME_KEY = re.compile(r"""["']name["']\s*+:""")
_ARGUMENTS_KEY = re.compile(r"""["'](?:arguments|parameters)["']\s*+:""")
# Possessive quantifiers (`*+`) throughout: a failed match must not backtrack into a run of blanks and rescan it.
# A line starting with `{`, or with `[` and then `{` (the list may open on a line of its own).
_JSON_LINE_START = re.compile(r"^[ \t]*+(?=\{|\[\s*+\{)", re.MULTILINE)
# The start of a line that may be a Python-style call: `name(`, `a.b(`, `[name(`, optionally in backticks. Without
# known tool names, no space may precede the parenthesis: prose writes "Total (2)", code writes "total(2)".
_CALL_LINE_START = re.compile(r"^[ \t]*+`?+(?:\[\s*+|[ \t]*+)[^\W\d][\w.]*+\(", re.MULTILINE)
_CALL_LINE_START_LENIENT = re.compile(r"^[ \t]*+`?+(?:\[\s*+|[ \t]*+)[^\W\d][\w.]*+\s*+\(", re.MULTILINE)
_BLANKS = re.compile(r"\s*+")
# What may follow the closing parenthesis of a Python-style call on its line: whitespace (all of str.isspace's),
# a semicolon, a closing backtick.
_AFTER_CALL = "".join(char for char in map(chr, range(0x3001)) if char.isspace()) + ";`"
_JSON_WORDS = {"true": True, "false": False, "null": None}
# What small models leave after a JSON call (an extra brace, a comma, a fence): tolerated, not an error.
_TRAILING_JUNK = " \t\r\n}]`,;"


class _Parser:
    def __init__(self, text: str, names: frozenset[str] | None) -> None:
        self.text = text
        self.names = names
        # Characters the decoders (json, ast) may still read in this message: a stage stops when it is spent, so
        # that a long message full of near-calls cannot make parsing slow.
        self.budget = _PARSE_BUDGET_CHARS

    def _decode(self, text: str, start: int = 0) -> _Decoded:
        decoded = _decode_json_values(text, start)
        self.budget -= decoded.examined - start
        return decoded

    def _python(self, text: str, raw: str, fmt: CallFormat, *, require_literals: bool) -> list[Item] | None:
        if not text or text.isspace():
            return None
        self.budget -= len(text) if len(text) <= _MAX_CALL_CHARS else 0  # longer texts are not parsed
        names = self.names if fmt != "tag" else None
        return _python_calls(text, raw, fmt, names, require_literals=require_literals)

    def _literal(self, text: str) -> Any:
        self.budget -= len(text) if len(text) <= _MAX_CALL_CHARS else 0
        return _python_literal(text)

    def parse(self) -> ParseResult:
        hits: list[_Hit] = []
        free = [(0, len(self.text))]
        stages: list[Callable[[str], list[_Hit]]] = [self._tags, self._fences, self._json_lines, self._python_lines]
        for stage in stages:
            remaining: list[tuple[int, int]] = []
            for start, end in free:
                cursor = start
                for hit in stage(self.text[start:end]):
                    hit_start, hit_end = start + hit.start, start + hit.end
                    if hit_start < cursor or hit_end > end or hit_end <= hit_start:
                        continue  # defensive: a stage must return ordered, disjoint spans inside its segment
                    hits.append(_Hit(hit_start, hit_end, hit.items))
                    if hit_start > cursor:
                        remaining.append((cursor, hit_start))
                    cursor = hit_end
                if cursor < end:
                    remaining.append((cursor, end))
            free = remaining
        hits.sort(key=lambda hit: hit.start)
        items = [item for hit in hits for item in hit.items]
        outside = "".join(self.text[start:end] for start, end in free)
        outside = _CLOSE_TAG.sub("", outside)  # a stray closing tag is not prose
        outside = re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", outside).strip()
        errors = [item for item in items if isinstance(item, CallError)]
        if len(errors) > _MAX_ERRORS:
            rest = len(errors) - _MAX_ERRORS + 1
            errors[_MAX_ERRORS - 1 :] = [_error(f"{rest:,} more calls could not be read", errors[_MAX_ERRORS - 1].raw)]
        return ParseResult(
            calls=[item for item in items if isinstance(item, ToolCall)], errors=errors, text_outside=outside
        )

    # -- stage 1: <tool_call> ... </tool_call> ---------------------------------------------------------------------

    def _tags(self, text: str) -> list[_Hit]:
        hits: list[_Hit] = []
        position = 0
        closing: re.Match[str] | None = None
        searched_from = -1
        while (opening := _OPEN_TAG.search(text, position)) is not None:
            if self.budget <= 0:  # a model's mistakes are data: say that the rest was not read
                reason = (
                    f"the message is too long: {_PARSE_BUDGET_CHARS:,} characters of tool calls are read per message "
                    "and the calls from here on were not read; make fewer or shorter calls"
                )
                hits.append(_Hit(opening.start(), len(text), [_error(reason, text[opening.start() :], "tag")]))
                break
            body_start = opening.end()
            # Search for a closing tag again only when the last one found lies behind us (else the text is scanned
            # to its end once per opening tag: quadratic in a message full of unclosed tags).
            if searched_from < 0 or (closing is not None and closing.start() < body_start):
                closing = _CLOSE_TAG.search(text, body_start)
                searched_from = body_start
            following = _OPEN_TAG.search(text, body_start)
            if closing is not None and (following is None or closing.start() < following.start()):
                body = text[body_start : closing.start()]
                items, _ = self._tag_body(body, text[opening.start() : closing.end()], closed=True)
                end = closing.end()
            else:
                stop = following.start() if following is not None else len(text)
                body = text[body_start:stop]
                items, used = self._tag_body(body, text[opening.start() : stop].rstrip(), closed=False)
                end = body_start + used
            hits.append(_Hit(opening.start(), end, items))
            position = max(end, body_start)
        return hits

    def _tag_body(self, body: str, raw: str, *, closed: bool) -> tuple[list[Item], int]:
        """The items in one tag's body, and how much of the body they used (the rest of an unclosed tag is prose)."""
        inner_start, inner = _strip_fence(body)
        if not inner.strip():
            return [
                _error(
                    'the <tool_call> block is empty; put a JSON object with "name" and "arguments" in it', raw, "tag"
                )
            ], len(body)
        values, consumed, problem, _ = self._decode(inner)
        if values:
            rest = inner[consumed:]
            if closed and rest.strip(_TRAILING_JUNK):
                reason = f"unexpected text after the JSON in <tool_call>: {_snippet(rest.strip(), 60)!r}"
                return [_error(reason + "; put only the JSON object between the tags", raw, "tag")], len(body)
            items = [_call_from_value(value, raw, "tag") for value in _flatten(values)]
            if closed or not rest.strip(_TRAILING_JUNK):
                return items, len(body)
            return items, inner_start + consumed
        python = self._python(inner, raw, "tag", require_literals=False)
        if python is not None:
            return python, len(body)
        literal = self._literal(inner)
        if isinstance(literal, dict | list):
            return [_call_from_value(value, raw, "tag") for value in _flatten([literal])], len(body)
        reason = f"the text in <tool_call> is not valid JSON ({problem})"
        if not closed:
            reason += "; the call may be cut off: no </tool_call> follows"
        return [_error(reason + '; write {"name": "...", "arguments": {...}}', raw, "tag")], len(body)

    # -- stage 2: fenced code blocks ---------------------------------------------------------------------------------

    def _fences(self, text: str) -> list[_Hit]:
        hits: list[_Hit] = []
        position = 0
        while self.budget > 0 and (match := _FENCE.search(text, position)) is not None:
            language = (match.group(1) or "").lower()
            content, raw = match.group(2), match.group(0)
            end = match.end()
            items: list[Item] | None = None
            if language in _JSON_FENCES and content.lstrip().startswith(("{", "[")):
                (values, _, problem, _), end = self._fenced_json(text, match)
                raw = text[match.start() : end]
                flat = _flatten(values)
                if flat and any(_is_call_shaped(value) for value in flat):
                    items = [_call_from_value(value, raw, "fenced") for value in flat]
                elif not values and _looks_like_json_call(content):
                    items = [_error(f"the tool call in the code block is not valid JSON ({problem})", raw, "fenced")]
            if items is None and language in _PYTHON_FENCES:
                end, raw = match.end(), match.group(0)
                items = self._python(content, raw, "fenced", require_literals=True)
            if items:
                hits.append(_Hit(match.start(), end, items))
            position = end if items else match.end()
        return hits

    def _fenced_json(self, text: str, match: re.Match[str]) -> tuple[_Decoded, int]:
        """The JSON in a fence, and where the fence ends. A ``` inside a JSON string (code in an argument) does not
        close the fence: while the content ends inside a string, it is read on to the next ```, a few times at most.
        (Slices, not offsets into `text`: a JSON error counts its line from the start of the text it is given.)"""
        first = self._decode(match.group(2))
        start, end = match.start(2), match.end(2)
        for _ in range(_MAX_FENCES_IN_JSON):
            if end >= len(text) or not first.problem.startswith("Unterminated string"):
                break
            closing = text.find("```", end + 3)
            end = len(text) if closing < 0 else closing
            decoded = self._decode(text[start:end])
            if decoded.values:
                return decoded, min(len(text), end + 3)
            if not decoded.problem.startswith("Unterminated string"):
                break
        return first, match.end()

    # -- stage 3: a bare JSON call on its own lines ----------------------------------------------------------------

    def _json_lines(self, text: str) -> list[_Hit]:
        hits: list[_Hit] = []
        position = 0
        for count, match in enumerate(_JSON_LINE_START.finditer(text)):
            if count >= _MAX_CANDIDATES or self.budget <= 0:
                break
            start = match.end()
            if start < position:
                continue
            values, end, problem, _ = self._decode(text, start)
            flat = _flatten(values)
            if flat and all(_is_call_shaped(value) for value in flat):
                line_end = _line_end(text, end)
                self.budget -= line_end - end  # the rest of the line is read too
                if _CLOSE_TAG.sub("", text[end:line_end]).strip(_TRAILING_JUNK):
                    continue  # JSON followed by more text on its line: part of a sentence, not a call
                raw = text[match.start() : line_end]
                hits.append(_Hit(match.start(), line_end, [_call_from_value(v, raw, "json") for v in flat]))
                position = line_end
            elif not values and _looks_like_json_call(text, start, start + 500):
                raw = text[match.start() :]
                hits.append(
                    _Hit(
                        match.start(), len(text), [_error(f"the tool call is not valid JSON ({problem})", raw, "json")]
                    )
                )
                break
        return hits

    # -- stage 4: Python-style calls on their own lines ------------------------------------------------------------

    def _python_lines(self, text: str) -> list[_Hit]:
        hits: list[_Hit] = []
        position = 0
        pattern = _CALL_LINE_START if self.names is None else _CALL_LINE_START_LENIENT
        for count, match in enumerate(pattern.finditer(text)):
            if count >= _MAX_CANDIDATES or self.budget <= 0:
                break
            start = match.start()
            if start < position:
                continue
            # Extend the candidate a line at a time while it may be a call (it ends with `)` or `]`, give or take
            # blanks, a semicolon, a backtick); each line is read once, not the whole candidate once per line.
            line_start, last = start, ""
            for _ in range(_MAX_CALL_LINES):
                end = _line_end(text, line_start)
                if end - start > _MAX_CALL_CHARS:
                    break
                significant = text[line_start:end].rstrip(_AFTER_CALL)
                last = significant[-1] if significant else last
                if last in (")", "]"):
                    if self.budget <= 0:
                        return hits
                    candidate = text[start:end]
                    items = self._python(candidate, candidate.strip(), "python", require_literals=True)
                    if items is not None:
                        hits.append(_Hit(start, end, items))
                        position = end
                        break
                if end >= len(text):
                    break
                line_start = end + 1
        return hits


# ---------------------------------------------------------------------------------------------------------------
# Helpers, each total: they return a value or an error item, never raise on odd input.


def _snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quoted(name: object) -> str:
    """A name the model wrote, quoted for an error message and cut: it may be any length."""
    return _snippet(repr(name), 60)


def _error(reason: str, raw: str, fmt: CallFormat | None = None, name: str | None = None) -> CallError:
    return CallError(reason=reason, raw=_snippet(raw), format=fmt, name=name)


def _strip_fence(body: str) -> tuple[int, str]:
    """Remove a ``` fence around a tag's body; returns (offset of the content in `body`, the content)."""
    match = re.match(r"\s*```[ \t]*[\w+\-]*[^\S\n]*\n?", body)
    if match is None:
        return 0, body
    content = body[match.end() :]
    closing = content.rfind("```")
    return match.end(), content[:closing] if closing >= 0 else content


def _line_end(text: str, index: int) -> int:
    """The index of the newline that ends the line holding `index`, or the end of the text."""
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline


def _looks_like_json_call(text: str, start: int = 0, stop: int | None = None) -> bool:
    """Whether text[start:stop] has a "name" key followed (anywhere later) by an "arguments" key: two scans."""
    stop = len(text) if stop is None else min(stop, len(text))
    name = _NAME_KEY.search(text, start, stop)
    return name is not None and _ARGUMENTS_KEY.search(text, name.end(), stop) is not None


class _Decoded(NamedTuple):
    values: list[Any]
    end: int
    """the index after the last value read"""
    problem: str
    """the decoder's complaint, if no value could be read"""
    examined: int
    """how far the decoder may have read: what the attempt costs"""


_DECODER = json.JSONDecoder()


def _decode_json_values(text: str, start: int = 0) -> _Decoded:
    """The JSON values at text[start:] (after blanks; separated by whitespace or commas)."""
    values: list[Any] = []
    blanks = _BLANKS.match(text, start)
    assert blanks is not None  # `\s*+` matches anywhere
    index = examined = end = blanks.end()
    problem = ""
    while index < len(text) and text[index] in "{[":
        try:
            value, index = _DECODER.raw_decode(text, index)
        except json.JSONDecodeError as error:
            # The scanner stops at the error, or (a string) at the end of its line: no raw newline in JSON strings.
            examined = _line_end(text, error.pos)
            if not values:
                line = text.count("\n", start, error.pos) + 1
                column = error.pos - max(start, text.rfind("\n", start, error.pos) + 1) + 1
                problem = f"{error.msg} at line {line}, column {column}"
            break
        except (ValueError, RecursionError) as error:  # too deep, a number too long for int(): read to the end
            examined = len(text)
            if not values:
                problem = str(error) or type(error).__name__
            break
        values.append(value)
        end = examined = index
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
    if not values and not problem:
        problem = "expected a JSON object starting with '{'"
    return _Decoded(values, end, problem, examined)


def _flatten(values: list[Any]) -> list[Any]:
    """A list of objects counts as that many calls; any other list stays one value (and is refused as a call)."""
    flat: list[Any] = []
    for value in values:
        is_call_list = isinstance(value, list) and value and all(isinstance(item, dict) for item in value)
        flat.extend(value if is_call_list else [value])
    return flat


def _is_call_shaped(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    if isinstance(value.get("function"), dict) and "name" not in value:
        return True
    return "name" in value and ("arguments" in value or "parameters" in value)


def _call_from_value(value: Any, raw: str, fmt: CallFormat) -> Item:
    """A decoded JSON value as a `ToolCall`, or the reason it is not one."""
    shape = 'write {"name": "<tool>", "arguments": {...}}'
    if isinstance(value, dict) and isinstance(value.get("function"), dict) and "name" not in value:
        value = value["function"]  # OpenAI's {"type": "function", "function": {...}}
    if not isinstance(value, dict):
        return _error(f"a tool call must be a JSON object, not {_json_type(value)}; {shape}", raw, fmt)
    name = value.get("name")
    if name is None:
        return _error(f'the tool call has no "name"; {shape}', raw, fmt)
    if not isinstance(name, str) or not name.strip():
        return _error(f'"name" must be the tool\'s name as a non-empty string, not {_json_type(name)}', raw, fmt)
    name = name.strip()
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI encodes arguments as a JSON string
        if not arguments.strip():
            arguments = {}
        else:
            try:
                arguments = json.loads(arguments)
            except (ValueError, RecursionError):
                return _error(
                    f'"arguments" of {_quoted(name)} is a string that is not a JSON object; {shape}', raw, fmt, name
                )
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return _error(
            f'"arguments" of {_quoted(name)} must be a JSON object, not {_json_type(arguments)}', raw, fmt, name
        )
    if not all(isinstance(key, str) for key in arguments):
        return _error(f"the argument names of {_quoted(name)} must be strings", raw, fmt, name)
    return _tool_call(name, arguments, raw, fmt)


def _tool_call(name: str, arguments: dict[str, Any], raw: str, fmt: CallFormat) -> Item:
    """The call, its strings made valid text: a JSON `"\\udcff"` decodes to a lone surrogate, which no trajectory
    can serialize."""
    try:
        arguments = _valid_value(arguments)
    except RecursionError:
        return _error(f"the arguments of {_quoted(name)} are nested too deeply", raw, fmt, name)
    return ToolCall(name=valid_text(name), arguments=arguments, raw=raw, format=fmt)


def _valid_value(value: Any) -> Any:
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {valid_text(key) if isinstance(key, str) else key: _valid_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):  # Python literals may be tuples and sets
        return type(value)(_valid_value(item) for item in value)
    return value


def _json_type(value: Any) -> str:
    for kind, label in ((bool, "a boolean"), (str, "a string"), (int | float, "a number"), (list, "a list")):
        if isinstance(value, kind):
            return label
    return "null" if value is None else ("an object" if isinstance(value, dict) else type(value).__name__)


class _JsonWords(ast.NodeTransformer):
    """`true`, `false` and `null` as the constants a model meant when it mixed JSON into Python."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _JSON_WORDS:
            return ast.copy_location(ast.Constant(_JSON_WORDS[node.id]), node)
        return node


def _parse_expression(text: str) -> ast.expr | None:
    """`text` as one Python expression, or None; quiet (no SyntaxWarning) and safe on any input."""
    if len(text) > _MAX_CALL_CHARS:
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


def _python_literal(text: str) -> Any:
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


def _python_calls(
    text: str, raw: str, fmt: CallFormat, names: frozenset[str] | None, *, require_literals: bool
) -> list[Item] | None:
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
    items: list[Item] = []
    for call, name in zip(call_nodes, call_names, strict=True):
        assert name is not None
        values = [_literal(kw.value) for kw in call.keywords] + [_literal(arg) for arg in call.args]
        if require_literals and names is None and not all(ok for ok, _ in values):
            return None  # code in prose (`print(x)`), not a call attempt
        items.append(_python_call(call, name, raw, fmt))
    return items


def _python_call(call: ast.Call, name: str, raw: str, fmt: CallFormat) -> Item:
    shown = _snippet(name, 60)
    if call.args:
        return _error(
            f"{shown}(...) has positional arguments; name every argument, e.g. {shown}(argument=value)", raw, fmt, name
        )
    arguments: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            return _error(f"{shown}(...) unpacks **arguments; write each argument as name=value", raw, fmt, name)
        ok, value = _literal(keyword.value)
        if not ok:
            return _error(
                f"argument {_quoted(keyword.arg)} of {shown}(...) is not a literal value (a number, string, list, "
                "dict, True/False/None); expressions and variables cannot be evaluated",
                raw,
                fmt,
                name,
            )
        arguments[keyword.arg] = value
    return _tool_call(name, arguments, raw, fmt)
