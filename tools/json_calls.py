"""Tool calls written as JSON: `{"name": ..., "arguments": {...}}` objects (or lists of them), as a decoded value
or as text to decode. Each helper is total: it returns a value or a `CallError`, never raises on odd input."""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from tools.calls import CallFormat, ParsedItem, call_error, make_call, quoted_name

# Text that is clearly meant as a JSON call even when it does not parse: a "name" key, then an "arguments" key.
_NAME_KEY = re.compile(r"""["']name["']\s*+:""")
_ARGUMENTS_KEY = re.compile(r"""["'](?:arguments|parameters)["']\s*+:""")
_BLANKS = re.compile(r"\s*+")


def end_of_line(text: str, index: int) -> int:
    """The index of the newline that ends the line holding `index`, or the end of the text."""
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline


def looks_like_json_call(text: str, start: int = 0, stop: int | None = None) -> bool:
    """Whether text[start:stop] has a "name" key followed (anywhere later) by an "arguments" key: two scans."""
    stop = len(text) if stop is None else min(stop, len(text))
    name = _NAME_KEY.search(text, start, stop)
    return name is not None and _ARGUMENTS_KEY.search(text, name.end(), stop) is not None


class Decoded(NamedTuple):
    values: list[Any]
    end: int
    """the index after the last value read"""
    problem: str
    """the decoder's complaint, if no value could be read"""
    examined: int
    """how far the decoder may have read: what the attempt costs"""


_DECODER = json.JSONDecoder()


def decode_json_values(text: str, start: int = 0) -> Decoded:
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
            examined = end_of_line(text, error.pos)
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
    return Decoded(values, end, problem, examined)


def flatten_calls(values: list[Any]) -> list[Any]:
    """A list of objects counts as that many calls; any other list stays one value (and is refused as a call)."""
    flat: list[Any] = []
    for value in values:
        is_call_list = isinstance(value, list) and value and all(isinstance(item, dict) for item in value)
        flat.extend(value if is_call_list else [value])
    return flat


def is_call_shaped(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    if isinstance(value.get("function"), dict) and "name" not in value:
        return True
    return "name" in value and ("arguments" in value or "parameters" in value)


def call_from_value(value: Any, raw: str, fmt: CallFormat) -> ParsedItem:
    """A decoded JSON value as a `ToolCall`, or the reason it is not one."""
    shape = 'write {"name": "<tool>", "arguments": {...}}'
    if isinstance(value, dict) and isinstance(value.get("function"), dict) and "name" not in value:
        value = value["function"]  # OpenAI's {"type": "function", "function": {...}}
    if not isinstance(value, dict):
        return call_error(f"a tool call must be a JSON object, not {_json_type(value)}; {shape}", raw, fmt)
    name = value.get("name")
    if name is None:
        return call_error(f'the tool call has no "name"; {shape}', raw, fmt)
    if not isinstance(name, str) or not name.strip():
        return call_error(f'"name" must be the tool\'s name as a non-empty string, not {_json_type(name)}', raw, fmt)
    name = name.strip()
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI encodes arguments as a JSON string
        if not arguments.strip():
            arguments = {}
        else:
            try:
                arguments = json.loads(arguments)
            except (ValueError, RecursionError):
                return call_error(
                    f'"arguments" of {quoted_name(name)} is a string that is not a JSON object; {shape}', raw, fmt, name
                )
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return call_error(
            f'"arguments" of {quoted_name(name)} must be a JSON object, not {_json_type(arguments)}', raw, fmt, name
        )
    if not all(isinstance(key, str) for key in arguments):
        return call_error(f"the argument names of {quoted_name(name)} must be strings", raw, fmt, name)
    return make_call(name, arguments, raw, fmt)


def _json_type(value: Any) -> str:
    for kind, label in ((bool, "a boolean"), (str, "a string"), (int | float, "a number"), (list, "a list")):
        if isinstance(value, kind):
            return label
    return "null" if value is None else ("an object" if isinstance(value, dict) else type(value).__name__)
