"""How tool calls are read out of a model's text (the calls themselves, as data, are `tools.calls`).

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
and the JSON and Python decoders together read at most `PARSE_BUDGET_CHARS` characters of one message (plus the one
attempt that crosses it); the rest is not read. Nesting deeper than the decoders' recursion limit is a parse error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from tools.calls import CallError, CallFormat, ParsedItem, ParseResult, ToolCall, call_error, snippet
from tools.json_calls import (
    Decoded,
    call_from_value,
    decode_json_values,
    end_of_line,
    flatten_calls,
    is_call_shaped,
    looks_like_json_call,
)
from tools.python_calls import MAX_CALL_CHARS, python_calls, python_literal

# Bounds on the work spent on one message, so that a pathological text cannot make parsing slow.
_MAX_CANDIDATES = 200
_MAX_CALL_LINES = 30
# Characters the JSON and Python decoders may read in one message, all stages together.
PARSE_BUDGET_CHARS = 200_000
# How many ``` inside JSON strings a fenced call may hold (code blocks in its arguments).
_MAX_FENCES_IN_JSON = 8
# Failed attempts reported per message (each becomes an observation); the rest are counted in the last one.
_MAX_ERRORS = 10


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
        return ParseResult(errors=[CallError(reason=reason, raw=snippet(text))], text_outside=text.strip())


@dataclass
class _Hit:
    """Items found at text[start:end] (offsets relative to the segment they were searched in)."""

    start: int
    end: int
    items: list[ParsedItem]


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
        self.budget = PARSE_BUDGET_CHARS

    def _decode(self, text: str, start: int = 0) -> Decoded:
        decoded = decode_json_values(text, start)
        self.budget -= decoded.examined - start
        return decoded

    def _python(self, text: str, raw: str, fmt: CallFormat, *, require_literals: bool) -> list[ParsedItem] | None:
        if not text or text.isspace():
            return None
        self.budget -= len(text) if len(text) <= MAX_CALL_CHARS else 0  # longer texts are not parsed
        names = self.names if fmt != "tag" else None
        return python_calls(text, raw, fmt, names, require_literals=require_literals)

    def _literal(self, text: str) -> Any:
        self.budget -= len(text) if len(text) <= MAX_CALL_CHARS else 0
        return python_literal(text)

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
            errors[_MAX_ERRORS - 1 :] = [
                call_error(f"{rest:,} more calls could not be read", errors[_MAX_ERRORS - 1].raw)
            ]
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
                    f"the message is too long: {PARSE_BUDGET_CHARS:,} characters of tool calls are read per message "
                    "and the calls from here on were not read; make fewer or shorter calls"
                )
                hits.append(_Hit(opening.start(), len(text), [call_error(reason, text[opening.start() :], "tag")]))
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

    def _tag_body(self, body: str, raw: str, *, closed: bool) -> tuple[list[ParsedItem], int]:
        """The items in one tag's body, and how much of the body they used (the rest of an unclosed tag is prose)."""
        inner_start, inner = _strip_fence(body)
        if not inner.strip():
            return [
                call_error(
                    'the <tool_call> block is empty; put a JSON object with "name" and "arguments" in it', raw, "tag"
                )
            ], len(body)
        values, consumed, problem, _ = self._decode(inner)
        if values:
            rest = inner[consumed:]
            if closed and rest.strip(_TRAILING_JUNK):
                reason = f"unexpected text after the JSON in <tool_call>: {snippet(rest.strip(), 60)!r}"
                return [call_error(reason + "; put only the JSON object between the tags", raw, "tag")], len(body)
            items = [call_from_value(value, raw, "tag") for value in flatten_calls(values)]
            if closed or not rest.strip(_TRAILING_JUNK):
                return items, len(body)
            return items, inner_start + consumed
        python = self._python(inner, raw, "tag", require_literals=False)
        if python is not None:
            return python, len(body)
        literal = self._literal(inner)
        if isinstance(literal, dict | list):
            return [call_from_value(value, raw, "tag") for value in flatten_calls([literal])], len(body)
        reason = f"the text in <tool_call> is not valid JSON ({problem})"
        if not closed:
            reason += "; the call may be cut off: no </tool_call> follows"
        return [call_error(reason + '; write {"name": "...", "arguments": {...}}', raw, "tag")], len(body)

    # -- stage 2: fenced code blocks ---------------------------------------------------------------------------------

    def _fences(self, text: str) -> list[_Hit]:
        hits: list[_Hit] = []
        position = 0
        while self.budget > 0 and (match := _FENCE.search(text, position)) is not None:
            language = (match.group(1) or "").lower()
            content, raw = match.group(2), match.group(0)
            end = match.end()
            items: list[ParsedItem] | None = None
            if language in _JSON_FENCES and content.lstrip().startswith(("{", "[")):
                (values, _, problem, _), end = self._fenced_json(text, match)
                raw = text[match.start() : end]
                flat = flatten_calls(values)
                if flat and any(is_call_shaped(value) for value in flat):
                    items = [call_from_value(value, raw, "fenced") for value in flat]
                elif not values and looks_like_json_call(content):
                    items = [
                        call_error(f"the tool call in the code block is not valid JSON ({problem})", raw, "fenced")
                    ]
            if items is None and language in _PYTHON_FENCES:
                end, raw = match.end(), match.group(0)
                items = self._python(content, raw, "fenced", require_literals=True)
            if items:
                hits.append(_Hit(match.start(), end, items))
            position = end if items else match.end()
        return hits

    def _fenced_json(self, text: str, match: re.Match[str]) -> tuple[Decoded, int]:
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
            flat = flatten_calls(values)
            if flat and all(is_call_shaped(value) for value in flat):
                line_end = end_of_line(text, end)
                self.budget -= line_end - end  # the rest of the line is read too
                if _CLOSE_TAG.sub("", text[end:line_end]).strip(_TRAILING_JUNK):
                    continue  # JSON followed by more text on its line: part of a sentence, not a call
                raw = text[match.start() : line_end]
                hits.append(_Hit(match.start(), line_end, [call_from_value(v, raw, "json") for v in flat]))
                position = line_end
            elif not values and looks_like_json_call(text, start, start + 500):
                raw = text[match.start() :]
                hits.append(
                    _Hit(
                        match.start(),
                        len(text),
                        [call_error(f"the tool call is not valid JSON ({problem})", raw, "json")],
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
                end = end_of_line(text, line_start)
                if end - start > MAX_CALL_CHARS:
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


def _strip_fence(body: str) -> tuple[int, str]:
    """Remove a ``` fence around a tag's body; returns (offset of the content in `body`, the content)."""
    match = re.match(r"\s*```[ \t]*[\w+\-]*[^\S\n]*\n?", body)
    if match is None:
        return 0, body
    content = body[match.end() :]
    closing = content.rfind("```")
    return match.end(), content[:closing] if closing >= 0 else content
