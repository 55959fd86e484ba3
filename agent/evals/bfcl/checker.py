"""BFCL's AST rules for one Python call, reimplemented (bfcl_eval's `ast_checker.py` is the reference; not imported).

A call `{"name", "arguments"}` is valid against a case when:
- the function name is the expected one (dots and underscores are the same character: tools are offered to the model
  with "." written as "_", as BFCL does for OpenAI-style names);
- every required parameter is present and no parameter is unknown (to the function or to the possible answer);
- each value has the declared type, with BFCL's coercions: an int is accepted for a float, a tuple is a list; a value
  of the possible answer's own type is accepted when that differs from the declared one (BFCL's "variable" case);
- each value is among the acceptable values: strings compared after BFCL's normalization (case, spaces and
  ",./-_*^" ignored, ' read as "), lists element-wise so, dicts key by key, lists of dicts in order;
- a parameter of the possible answer that is missing is allowed only when "" is among its acceptable values.
For `multiple` the expected function is the one named by the possible answer, among the several offered.
For `irrelevance` (no possible answer: none of the offered functions fits the question) a reply is right when it makes
no call at all (`check_no_call`), as BFCL's relevance checker counts it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

_PYTHON_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "number": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
    "any": str,
}
_NESTED = ("array", "tuple")
_PUNCTUATION = re.compile(r"[ ,./\-_*^]")


class Verdict(BaseModel):
    """The checker's decision on one call, with BFCL's error type and a reason a person can read."""

    valid: bool
    reason: str = ""
    error_type: str = Field("", description="BFCL-style error class, e.g. simple_function_checker:wrong_func_name")


def _fail(error_type: str, reason: str) -> Verdict:
    return Verdict(valid=False, reason=reason, error_type=error_type)


def normalize_name(name: str) -> str:
    """Function names as compared: "." is written "_" (OpenAI-style tool names cannot contain dots)."""
    return name.replace(".", "_")


def standardize_string(text: str) -> str:
    """BFCL's string normalization: lower case, no spaces or ",./-_*^", single quotes as double quotes."""
    return _PUNCTUATION.sub("", text).lower().replace("'", '"')


def _standardized(values: Sequence[Any]) -> list[Any]:
    return [standardize_string(v) if isinstance(v, str) else v for v in values]


def _answer_type(acceptable: Sequence[Any]) -> type | None:
    """The type of the first acceptable value that is not the "omit me" marker ""."""
    return next((type(v) for v in acceptable if v != ""), None)


def _type_ok(value: Any, acceptable: Sequence[Any], declared: type, nested: type | None) -> tuple[bool, bool, str]:
    """(valid, is_variable, reason). Exact Python types as BFCL compares them (so True is not an int)."""
    answer_type = _answer_type(acceptable)
    is_variable = answer_type is not None and answer_type is not declared
    items: Any = value  # `type(value) is declared` narrows value to object for mypy; the loop below needs a list
    if type(value) is declared:
        if nested is None:
            return True, is_variable, ""
        # Like BFCL: a non-list acceptable value (the "" marker) checks nothing; a list one checks every item.
        for candidate in acceptable:
            if not isinstance(candidate, list) or all(_type_ok(item, candidate, nested, None)[0] for item in items):
                return True, is_variable, ""
        return False, False, f"expected a list of {nested.__name__}, got {value!r}"
    if answer_type is not None and type(value) is answer_type:
        return True, True, ""
    return False, False, f"expected type {declared.__name__}, got {type(value).__name__} ({value!r})"


def _dict_ok(value: dict[str, Any], acceptable: Sequence[Any]) -> str | None:
    """None if `value` matches one of the acceptable dicts key by key, else why not."""
    reason = "no acceptable dict"
    for answer in acceptable:
        if answer == "" or not isinstance(answer, dict):
            continue
        unknown = [key for key in value if key not in answer]
        wrong = [
            key
            for key in value
            if key in answer
            and (standardize_string(value[key]) if isinstance(value[key], str) else value[key])
            not in _standardized(answer[key])
        ]
        missing = [key for key, values in answer.items() if key not in value and "" not in values]
        if not (unknown or wrong or missing):
            return None
        reason = f"unexpected keys {unknown}, wrong values for {wrong}, missing keys {missing}"
    return reason


def _list_of_dicts_ok(value: list[Any], acceptable: Sequence[Any]) -> str | None:
    reason = "no acceptable list of dicts"
    for answer in acceptable:
        if not isinstance(answer, list):
            continue
        if len(answer) != len(value):
            reason = f"expected {len(answer)} dicts, got {len(value)}"
            continue
        problems = [
            _dict_ok(item, [want]) if isinstance(item, dict) else "not a dict"
            for item, want in zip(value, answer, strict=True)
        ]
        if all(p is None for p in problems):
            return None
        reason = next(p for p in problems if p is not None)
    return reason


def check_function_call(function: dict[str, Any], call: dict[str, Any], expected: dict[str, list[Any]]) -> Verdict:
    """BFCL's `simple_function_checker` for Python: `call` against one function and its acceptable values."""
    name = str(call.get("name", ""))
    arguments = call.get("arguments")
    if normalize_name(name) != normalize_name(function["name"]):
        return _fail("simple_function_checker:wrong_func_name", f"expected function {function['name']!r}, got {name!r}")
    if not isinstance(arguments, dict):
        return _fail("simple_function_checker:bad_arguments", "the arguments are not a JSON object")
    schema = function.get("parameters", {})
    details: dict[str, Any] = schema.get("properties", {})
    for param in schema.get("required", []):
        if param not in arguments:
            return _fail("simple_function_checker:missing_required", f"missing required parameter {param!r}")
    for param, value in arguments.items():
        if param not in details or param not in expected:
            return _fail("simple_function_checker:unexpected_param", f"unexpected parameter {param!r}")
        declared_name = str(details[param].get("type", "string"))
        declared = _PYTHON_TYPES.get(declared_name, str)
        nested = None
        if declared_name in _NESTED:
            nested = _PYTHON_TYPES.get(str(details[param].get("items", {}).get("type", "any")), str)
        acceptable = expected[param]
        if declared_name == "tuple" and isinstance(value, tuple):
            value = list(value)  # JSON has no tuples: a tuple answer is a list
        if declared is float and type(value) is int:
            value = float(value)  # Python's own int -> float promotion
        ok, is_variable, why = _type_ok(value, acceptable, declared, nested)
        if not ok:
            return _fail("type_error:simple", f"parameter {param!r}: {why}")
        if not is_variable:
            if declared is dict:
                problem = _dict_ok(value, acceptable)
                if problem is not None:
                    return _fail("value_error:dict", f"parameter {param!r}: {problem}")
                continue
            if declared is list and nested is dict:
                problem = _list_of_dicts_ok(value, acceptable)
                if problem is not None:
                    return _fail("value_error:list_dict", f"parameter {param!r}: {problem}")
                continue
            if declared is str:
                if standardize_string(value) not in _standardized([v for v in acceptable if isinstance(v, str)]):
                    return _fail("value_error:string", f"parameter {param!r}: {value!r} is not one of {acceptable!r}")
                continue
            if declared is list:
                wanted = [_standardized(v) for v in acceptable if isinstance(v, list)]
                if _standardized(value) not in wanted:
                    return _fail(
                        "value_error:list/tuple", f"parameter {param!r}: {value!r} is not one of {acceptable!r}"
                    )
                continue
        if value not in acceptable:
            return _fail("value_error:others", f"parameter {param!r}: {value!r} is not one of {acceptable!r}")
    for param, acceptable in expected.items():
        if param not in arguments and "" not in acceptable:
            return _fail("simple_function_checker:missing_optional", f"parameter {param!r} is missing and not optional")
    return Verdict(valid=True, reason="matches the possible answer")


def check_call(
    functions: Sequence[dict[str, Any]], possible_answer: Sequence[dict[str, dict[str, list[Any]]]], call: Any
) -> Verdict:
    """Judge the model's call (a `{"name", "arguments"}` dict, or None for no call) against a single-call case.

    The expected function is the one the possible answer names (for `multiple`, one among several offered).
    """
    if not possible_answer:
        return _fail("checker:no_answer", "the case has no possible answer")
    if call is None:
        return _fail("simple_function_checker:no_call", "the model made no tool call")
    if not isinstance(call, dict) or "name" not in call:
        return _fail("simple_function_checker:bad_call", f"not a call: {call!r}")
    ((expected_name, expected),) = possible_answer[0].items()
    function = next((f for f in functions if f.get("name") == expected_name), None)
    if function is None:
        return _fail("checker:bad_case", f"the expected function {expected_name!r} is not among those offered")
    return check_function_call(function, call, expected)


def check_no_call(call: Any) -> Verdict:
    """Judge a reply to a case whose right answer calls nothing (BFCL's `irrelevance`): valid when `call` is None."""
    if call is None:
        return Verdict(valid=True, reason="no call: none of the offered functions fits the question")
    name = call.get("name") if isinstance(call, dict) else call
    return _fail("irrelevance:called", f"called {name!r}, but none of the offered functions fits the question")
