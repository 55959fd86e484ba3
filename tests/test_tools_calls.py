"""Reading tool calls out of model text: each accepted format, each failure reason, and fuzzing that it never raises."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tools import CallError, ParseResult, ToolCall, ToolRegistry, calculator, parse_tool_calls, tool, validate_call
from tools.parser import PARSE_BUDGET_CHARS


@tool
def get_weather(city: str, unit: str = "C") -> str:
    """The weather in a city.

    Args:
        city: the city.
        unit: C or F.
    """
    return f"sunny in {city}"


REGISTRY = ToolRegistry([calculator, get_weather])


def only_call(text: str, **kwargs: Any) -> ToolCall:
    result = parse_tool_calls(text, **kwargs)
    assert result.errors == [], result.errors
    assert len(result.calls) == 1, result.calls
    return result.calls[0]


def only_error(text: str, **kwargs: Any) -> CallError:
    result = parse_tool_calls(text, **kwargs)
    assert result.calls == [], result.calls
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


# ---------------------------------------------------------------------------------------------------------------
# Accepted formats.


def test_canonical_tag() -> None:
    text = 'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    result = parse_tool_calls(text)
    assert result.calls == [
        ToolCall(
            name="get_weather",
            arguments={"city": "Paris"},
            raw='<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
            format="tag",
        )
    ]
    assert result.errors == [] and result.text_outside == "Let me check." and result.attempted


def test_several_tags_in_order_with_text_between() -> None:
    text = (
        'A <tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call> B\n'
        '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>\nC'
    )
    result = parse_tool_calls(text)
    assert [(c.name, c.arguments) for c in result.calls] == [("a", {"x": 1}), ("b", {})]
    assert result.text_outside == "A  B\n\nC"


def test_tag_tolerances() -> None:
    assert only_call('<tool_call>{"name": "a", "parameters": {"x": 1}}</tool_call>').arguments == {"x": 1}
    assert only_call('<tool_call>{"name": "a"}</tool_call>').arguments == {}
    assert only_call('<TOOL_CALL> {"name": "a", "arguments": {}} </Tool_Call>').name == "a"
    # OpenAI's wrapper and its JSON-encoded argument string
    openai = '<tool_call>{"type": "function", "function": {"name": "a", "arguments": "{\\"x\\": 2}"}}</tool_call>'
    assert only_call(openai).arguments == {"x": 2}
    # a fence inside the tags, an extra closing brace, single quotes and Python literals
    assert only_call('<tool_call>```json\n{"name": "a", "arguments": {}}\n```</tool_call>').name == "a"
    assert only_call('<tool_call>{"name": "a", "arguments": {}}}</tool_call>').name == "a"
    assert only_call("<tool_call>{'name': 'a', 'arguments': {'flag': True}}</tool_call>").arguments == {"flag": True}
    # a Python-style call inside the tags
    assert only_call('<tool_call>get_weather(city="Oslo")</tool_call>').arguments == {"city": "Oslo"}


def test_several_objects_or_a_list_in_one_tag() -> None:
    two = '<tool_call>{"name": "a", "arguments": {}}\n{"name": "b", "arguments": {}}</tool_call>'
    assert [c.name for c in parse_tool_calls(two).calls] == ["a", "b"]
    listed = '<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]</tool_call>'
    assert [c.name for c in parse_tool_calls(listed).calls] == ["a", "b"]


def test_missing_closing_tag_at_end_of_text() -> None:
    call = only_call('<tool_call>{"name": "a", "arguments": {"x": [1, 2]}}')
    assert call.arguments == {"x": [1, 2]}
    # what follows the JSON of an unclosed tag is prose
    result = parse_tool_calls('<tool_call>{"name": "a", "arguments": {}}\nI will wait for the result.')
    assert [c.name for c in result.calls] == ["a"] and result.text_outside == "I will wait for the result."
    # two opening tags, no closing ones
    text = '<tool_call>{"name": "a", "arguments": {}}\n<tool_call>{"name": "b", "arguments": {}}'
    assert [c.name for c in parse_tool_calls(text).calls] == ["a", "b"]


def test_fenced_json() -> None:
    text = 'Calling:\n```json\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n```\nok'
    result = parse_tool_calls(text)
    assert [(c.name, c.format) for c in result.calls] == [("get_weather", "fenced")]
    assert result.text_outside == "Calling:\n\nok"
    assert only_call('```\n{"name": "a", "parameters": {"x": 1}}\n```').arguments == {"x": 1}
    assert only_call('```json {"name": "a", "arguments": {}}```').name == "a"
    assert only_call('```tool_call\n[{"name": "a", "arguments": {}}]\n```').name == "a"
    # a fence inside a JSON string does not close the block
    inner = only_call('```json\n{"name": "a", "arguments": {"code": "```py\\nx\\n```"}}\n```\nafter')
    assert inner.arguments == {"code": "```py\nx\n```"} and inner.raw.endswith("}}\n```")


def test_fenced_python_calls() -> None:
    call = only_call('```python\nget_weather(city="Lima", unit="F")\n```')
    assert (call.name, call.arguments, call.format) == ("get_weather", {"city": "Lima", "unit": "F"}, "fenced")
    assert only_call("```tool_code\ncalculator(expression='1+1')\n```").name == "calculator"


def test_bare_json_call_on_its_own_line() -> None:
    result = parse_tool_calls('Sure.\n{"name": "get_weather", "arguments": {"city": "Kyiv"}}')
    assert [(c.name, c.format) for c in result.calls] == [("get_weather", "json")]
    assert result.text_outside == "Sure."
    # the opening tag forgotten, the closing one written
    assert only_call('{"name": "a", "arguments": {"x": 1}}</tool_call>').format == "json"


def test_python_style_calls() -> None:
    call = only_call('Let me compute.\ncalculator(expression="2 + 2")\n')
    assert (call.name, call.arguments, call.format) == ("calculator", {"expression": "2 + 2"}, "python")
    assert call.raw == 'calculator(expression="2 + 2")'
    nested = only_call("f(a=[1, {'k': (2, 3)}], b=-1.5, c=None, d=true, e=null)")
    assert nested.arguments == {"a": [1, {"k": (2, 3)}], "b": -1.5, "c": None, "d": True, "e": None}
    assert only_call("`get_time()`").arguments == {}
    assert only_call("get_weather(\n    city='Oslo',\n    unit='C',\n)").arguments == {"city": "Oslo", "unit": "C"}
    assert only_call("functions.get_weather(city='Oslo')").name == "functions.get_weather"
    bfcl = parse_tool_calls("[get_weather(city='A'), calculator(expression='1')]")
    assert [c.name for c in bfcl.calls] == ["get_weather", "calculator"]


def test_mixed_formats_keep_their_order() -> None:
    text = (
        'calculator(expression="1")\n'
        '<tool_call>{"name": "b", "arguments": {}}</tool_call>\n'
        '```json\n{"name": "c", "arguments": {}}\n```'
    )
    result = parse_tool_calls(text)
    assert [(c.name, c.format) for c in result.calls] == [("calculator", "python"), ("b", "tag"), ("c", "fenced")]


# ---------------------------------------------------------------------------------------------------------------
# Prose is prose.


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The answer is 42.",
        "Use print(x) to show x (in Python).",
        "Total (2)",
        "f(x)",
        "def main():\n    return helper(x)\n",
        '```json\n{"temperature": 21, "unit": "C"}\n```',
        '```python\nprint(f"{x}")\nresult = compute(data)\n```',
        '{"name": "Ada", "age": 36}',
        'He said {"name": "x", "arguments": {}} yesterday.',
        "Some code: ```ls -la```",
        "</tool_call> stray closing tag",
    ],
)
def test_plain_prose_has_no_calls_and_no_errors(text: str) -> None:
    result = parse_tool_calls(text)
    assert result == ParseResult(calls=[], errors=[], text_outside=result.text_outside)
    assert not result.attempted
    assert result.text_outside == text.replace("</tool_call>", "").strip()


def test_known_tool_names_restrict_python_style_calls() -> None:
    names = ["get_weather"]
    assert parse_tool_calls('print("hi")', tool_names=names).errors == []
    assert parse_tool_calls('print("hi")', tool_names=names).calls == []
    assert only_call("get_weather (city='X')", tool_names=names).arguments == {"city": "X"}
    error = only_error("get_weather(city=town)", tool_names=names)
    assert "'city'" in error.reason and "not a literal" in error.reason
    # tags always count, known or not
    assert only_call('<tool_call>{"name": "other", "arguments": {}}</tool_call>', tool_names=names).name == "other"


# ---------------------------------------------------------------------------------------------------------------
# Each failure reason.


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("<tool_call></tool_call>", ["block is empty"]),
        ("<tool_call>  \n </tool_call>", ["block is empty"]),
        ('<tool_call>{"name": "a", "arguments": {"x": 1 2}}</tool_call>', ["not valid JSON", "line 1, column"]),
        ('<tool_call>{"name": "a", "arguments": {"x": ', ["not valid JSON", "cut off", "no </tool_call>"]),
        ("<tool_call>call the weather tool</tool_call>", ["not valid JSON"]),
        ('<tool_call>{"arguments": {}}</tool_call>', ['has no "name"']),
        ('<tool_call>{"name": 3, "arguments": {}}</tool_call>', ['"name" must be', "not a number"]),
        ('<tool_call>{"name": "  ", "arguments": {}}</tool_call>', ['"name" must be', "non-empty"]),
        ('<tool_call>{"name": "a", "arguments": [1]}</tool_call>', ["\"arguments\" of 'a' must be a JSON object"]),
        ('<tool_call>{"name": "a", "arguments": "x=1"}</tool_call>', ["is a string that is not a JSON object"]),
        ('<tool_call>"get_weather"</tool_call>', ["not valid JSON"]),
        ("<tool_call>[1, 2]</tool_call>", ["must be a JSON object, not a list"]),
        ("<tool_call>[]</tool_call>", ["must be a JSON object, not a list"]),
        ("<tool_call>{'name': 'a', 'arguments': {1: 2}}</tool_call>", ["must be strings"]),
        ('<tool_call>{"name": "a", "arguments": {}} and more</tool_call>', ["unexpected text after the JSON"]),
        ('```json\n{"name": "a", "arguments": {"x": }\n```', ["code block is not valid JSON"]),
        ('{"name": "a", "arguments": {"x": "unterminated', ["tool call is not valid JSON"]),
        ('get_weather("Paris")', ["positional arguments", "get_weather(argument=value)"]),
        ("get_weather(**{'city': 'Paris'})", ["unpacks **arguments"]),
        ("<tool_call>get_weather(city=town)</tool_call>", ["'city'", "not a literal"]),
    ],
)
def test_failure_reasons(text: str, fragments: list[str]) -> None:
    error = only_error(text)
    assert error.stage == "parse" and error.raw
    for fragment in fragments:
        assert fragment in error.reason, error.reason
    assert error.observation() == f"error: {error.reason}"


def test_a_bad_call_beside_a_good_one() -> None:
    text = '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": </tool_call>'
    result = parse_tool_calls(text)
    assert [c.name for c in result.calls] == ["a"] and len(result.errors) == 1
    assert result.errors[0].format == "tag"


def test_raw_snippets_are_cut() -> None:
    error = only_error("<tool_call>{" + "x" * 1000)
    assert len(error.raw) <= 200


def test_non_text_input_is_an_error_not_an_exception() -> None:
    result = parse_tool_calls(None)  # type: ignore[arg-type]
    assert result.calls == [] and "not text" in result.errors[0].reason


# ---------------------------------------------------------------------------------------------------------------
# validate_call.


def test_validate_call_accepts_a_good_call() -> None:
    call = only_call('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>')
    assert validate_call(call, REGISTRY) is call


def test_validate_call_unknown_tool_lists_known_tools() -> None:
    call = ToolCall(name="search", arguments={}, raw="search()", format="python")
    error = validate_call(call, REGISTRY)
    assert isinstance(error, CallError) and error.stage == "validate" and error.name == "search"
    assert error.reason == "unknown tool 'search'; the tools are: calculator, get_weather"
    empty = validate_call(call, ToolRegistry())
    assert isinstance(empty, CallError) and "no tools exist" in empty.reason


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        ({}, ["'city': required argument is missing"]),
        ({"city": ["Paris"]}, ["'city':", "valid string"]),
        ({"city": "Paris", "country": "FR"}, ["'country': unknown argument"]),
    ],
)
def test_validate_call_names_the_field(arguments: dict[str, Any], fragments: list[str]) -> None:
    error = validate_call(ToolCall(name="get_weather", arguments=arguments), REGISTRY)
    assert isinstance(error, CallError) and error.stage == "validate"
    assert "get_weather" in error.reason
    for fragment in fragments:
        assert fragment in error.reason


def test_decoded_arguments_are_valid_text() -> None:
    """JSON's "\\udcff" and Python's '\\ud800' decode to lone surrogates: escaped, so a trajectory can hold them."""
    call = only_call(
        '<tool_call>{"name": "a\\udcff", "arguments": {"p\\ud800": ["caf\\udce9", {"k": "\\udfff"}]}}</tool_call>'
    )
    assert call.name == "a\\xff" and call.arguments == {"p\\ud800": ["caf\\xe9", {"k": "\\udfff"}]}
    assert only_call("get_weather(city='\\udce9')").arguments == {"city": "\\xe9"}
    assert only_call('{"name": "a", "arguments": {"x": "\\u00e9\\ud83d\\ude00"}}').arguments == {"x": "é\U0001f600"}
    call.model_dump_json()


def test_failed_attempts_are_capped_in_number() -> None:
    """Each error becomes an observation: 16k broken tags give ten, the last counting the rest."""
    result = parse_tool_calls("<tool_call>{" * 16_000)
    assert len(result.errors) == 10 and result.errors[-1].reason == "15,991 more calls could not be read"
    assert len(parse_tool_calls("<tool_call>{" * 10).errors) == 10


def test_validate_call_observations_are_capped_in_size() -> None:
    """100k bad items, a huge unknown tool name: the model gets a few KB at most, never megabytes."""
    call = ToolCall(name="get_weather", arguments={"city": ["Paris"] * 100_000, "x" * 10_000: 1})
    error = validate_call(call, REGISTRY)
    assert isinstance(error, CallError) and len(error.observation()) < 2_000
    unknown = validate_call(ToolCall(name="w" * 100_000), REGISTRY)
    assert isinstance(unknown, CallError) and len(unknown.observation()) < 2_000
    assert "the tools are: calculator, get_weather" in unknown.reason
    assert len(only_error('<tool_call>{"name": "' + "n" * 100_000 + '", "arguments": 1}</tool_call>').reason) < 2_000


# ---------------------------------------------------------------------------------------------------------------
# Fuzzing: the parser never raises and never hits its internal-error fallback.


def check_total(text: str) -> ParseResult:
    result = parse_tool_calls(text)
    assert isinstance(result, ParseResult)
    assert not any(e.reason.startswith("internal parser error") for e in result.errors), result.errors
    for call in result.calls:
        assert isinstance(call.arguments, dict) and call.name
    for error in result.errors:
        assert error.reason and len(error.raw) <= 200
    return result


@settings(max_examples=300)
@given(st.text())
def test_fuzz_any_text(text: str) -> None:
    check_total(text)


@settings(max_examples=200)
@given(st.text(alphabet=st.sampled_from(list("<>/tool_cal{}[]()\"':,=\n `json.name arguments 0123456789\\"))))
def test_fuzz_call_alphabet(text: str) -> None:
    check_total(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
names = st.one_of(st.text(max_size=12), st.sampled_from(["get_weather", "calculator", ""]), json_values)
argument_values = st.one_of(st.dictionaries(st.text(max_size=6), json_values, max_size=3), json_values)


@st.composite
def near_miss_calls(draw: st.DrawFn) -> str:
    """Calls in every format, then damaged: truncated, braces added or dropped, wrong types, unicode, noise."""
    payload: dict[str, Any] = {"name": draw(names)}
    if draw(st.booleans()):
        payload[draw(st.sampled_from(["arguments", "parameters", "args"]))] = draw(argument_values)
    body = json.dumps(payload, ensure_ascii=draw(st.booleans()))
    if (
        isinstance(payload["name"], str)
        and payload["name"].isidentifier()
        and isinstance(payload.get("arguments"), dict)
    ):
        keywords = ", ".join(f"{k}={v!r}" for k, v in payload["arguments"].items())
        python = f"{payload['name']}({keywords})"
    else:
        python = f"{draw(st.text(max_size=6))}({draw(st.text(max_size=10))})"
    wrapped = draw(
        st.sampled_from(
            [
                "<tool_call>{}</tool_call>",
                "<tool_call>{}",
                "<tool_call>\n```json\n{}\n```\n</tool_call>",
                "```json\n{}\n```",
                "```\n{}",
                "{}",
                "[{}]",
                "text before\n{}\ntext after",
            ]
        )
    )
    text = wrapped.replace("{}", draw(st.sampled_from([body, python, body + "}", "{" + body, body + body])))
    damage = draw(st.sampled_from(["none", "truncate", "cut_tail", "insert", "nest"]))
    if damage == "truncate" and text:
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "cut_tail" and text:
        text = text[draw(st.integers(0, len(text))) :]
    elif damage == "insert":
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at]
            + draw(st.sampled_from(["{", "}", "[", '"', "\\", "\x00", "é", "\U0001f600", "<tool_call>"]))
            + text[at:]
        )
    elif damage == "nest":
        depth = draw(st.integers(1, 2000))
        text = text.replace('"arguments": ', '"arguments": ' + "[" * depth, 1)
    return text


@settings(max_examples=400)
@given(near_miss_calls())
def test_fuzz_near_miss_calls(text: str) -> None:
    check_total(text)


@settings(max_examples=100)
@given(st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4), st.sampled_from(["tag", "fenced"]))
def test_well_formed_calls_round_trip(arguments: dict[str, Any], fmt: str) -> None:
    body = json.dumps({"name": "get_weather", "arguments": arguments})
    text = f"<tool_call>{body}</tool_call>" if fmt == "tag" else f"```json\n{body}\n```"
    call = only_call(text)
    assert (call.name, call.arguments, call.format) == ("get_weather", arguments, fmt)


def test_deeply_nested_input_does_not_crash() -> None:
    """json and ast both recurse: nesting far past the recursion limit is a parse error or prose, never a crash."""
    deep = "[" * 100_000
    for text in (
        "<tool_call>" + deep,
        "<tool_call>" + "{" * 50_000 + "}" * 50_000 + "</tool_call>",
        "f(a=" + "[" * 5000 + "]" * 5000 + ")",
        "(" * 10_000 + ")" * 10_000,
        "{" * 100_000,
        deep,
        "[{" * 50_000,
        "```json\n" + deep + "\n```",
        "```json\n" + "[{" * 50_000,
        "```python\n" + deep + "\n```",
        "f(a=" + deep + ")",
        "f(a=" + "[" * 20_000 + "]" * 20_000 + ")",
        "<tool_call>" + "a." * 50_000 + "a()</tool_call>",
        "a." * 50_000 + "a()",
        "f(a=" + "-" * 100_000 + "1)",
        "f(a=" + "1+" * 50_000 + "1)",
        "<tool_call>f(a=" + "not " * 20_000 + "x)</tool_call>",
        '<tool_call>{"name": "a", "arguments": "' + deep + '"}</tool_call>',
        '<tool_call>{"name": "a", "arguments": ' + deep + "</tool_call>",
        '{"name": "a", "arguments": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ):
        result = check_total(text)
        assert result.calls == []
    # a callee deeper than the recursion limit, shallow enough for ast.parse: read without recursion
    assert only_call("a." * 1_500 + "a()").name == "a." * 1_500 + "a"
    assert only_call("<tool_call>" + "a." * 1_500 + "a(x=1)</tool_call>").arguments == {"x": 1}


# ---------------------------------------------------------------------------------------------------------------
# Complexity: parse time is linear in the text whatever its shape (176 KB of `'name': 1,` in a fence took
# 16 s). The budget is CPU time (not wall time: the suite shares its cores), and generous: 0.05 s per KB + 1 s.

# (prefix, unit repeated to the size, suffix): the shapes that made some stage quadratic, or could.
ADVERSARIAL_SHAPES = {
    "fenced 'name': 1 items": ("```json\n{", "'name': 1, ", "}\n```"),
    "unclosed fence of 'name': 1 items": ("```json\n{", "'name': 1, ", ""),
    "python fence of 'name': 1 items": ("```python\n{", "'name': 1, ", "}\n```"),
    "'name' items then arguments": ("```json\n{", "'name': 1, ", "'arguments': }\n```"),
    "bare 'name': items": ("", '"name": ', ""),
    "lines of name without arguments": ("", '{"name": 1, ' * 20 + "\n", ""),
    "unmatched braces": ("", "{", ""),
    "lines of unmatched braces": ("", "{\n", ""),
    "lines of nested openings": ("", '{"a": [\n', '"' + "x" * 1000),
    "lines of nested calls": ("", '{"name": "a", "arguments": {"x":\n', ""),
    "nested lines then a long list": ('{"a": [\n' * 150, "1, ", ""),
    "nested lines then a long string": ('{"a": [\n' * 150 + '"', "x", ""),
    "nested calls then a long line": ('{"name": "a", "arguments": {"x":\n' * 150 + "{}" + "}" * 300, " x", ""),
    "tool_call openings": ("", "<tool_call>", ""),
    "tool_call openings with a brace": ("", "<tool_call>{", ""),
    "tool_call openings with a call": ("", '<tool_call>{"name": "a", "arguments": {}}', ""),
    "closed tool_calls": ("", '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n', ""),
    "f( line starts": ("", "f(\n", ""),
    "long call lines": ("", "f(a=[1, 2, 3, " + "4, " * 300 + "\n", ")"),
    "call lines that end in a bracket": ("", "f(a=1)]\n", ""),
    "deep brackets": ("", "[", ""),
    "deep brackets in a tag": ("<tool_call>", "[", ""),
    "deep brackets in a fence": ("```json\n", "[", "\n```"),
    "deep brackets in a call": ("f(a=", "[", ")"),
    "unclosed fences": ("", "```\n", ""),
    "unclosed json fences": ("", "```json\n{", ""),
    "backticks": ("", "`", ""),
    "spaces": ("", " ", ""),
    "newlines": ("", "\n", ""),
    "blank lines with tabs": ("", " \t\n", ""),
    "spaces then a call": ("", " ", "f(a=1)"),
    "json lines followed by text": ("", '{"name": "a", "arguments": {}} x\n', ""),
    "attribute chains": ("", "a.", "a()"),
}
CALL_ALPHABET = list("<>/tool_cal{}[]()\"':,=\n \t`json.name arguments 0123456789\\")


def parse_seconds(text: str) -> float:
    started = time.process_time()
    check_total(text)
    return time.process_time() - started


def seconds_allowed(text: str) -> float:
    return 0.05 * len(text) / 1000 + 1.0


def build(shape: tuple[str, str, str], size: int) -> str:
    prefix, unit, suffix = shape
    return prefix + unit * max(1, size // len(unit)) + suffix


@pytest.mark.parametrize("shape", ADVERSARIAL_SHAPES.values(), ids=ADVERSARIAL_SHAPES.keys())
def test_adversarial_shapes_parse_in_linear_time(shape: tuple[str, str, str]) -> None:
    text = build(shape, 176_000)
    seconds = parse_seconds(text)
    assert seconds < seconds_allowed(text), f"{len(text) / 1000:.0f} KB took {seconds:.1f} s"


# No shrinking: a timing failure shrinks slowly and the first failing size says enough.
@settings(max_examples=60, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    st.one_of(
        st.sampled_from(list(ADVERSARIAL_SHAPES.values())),
        st.tuples(st.text(CALL_ALPHABET, max_size=12), st.text(CALL_ALPHABET, min_size=1, max_size=12), st.just("")),
    ),
    st.integers(1_000, 400_000),
)
def test_fuzz_parse_time_is_linear_in_the_text(shape: tuple[str, str, str], size: int) -> None:
    text = build(shape, size)
    seconds = parse_seconds(text)
    assert seconds < seconds_allowed(text), f"{len(text) / 1000:.0f} KB took {seconds:.1f} s"


def test_text_past_the_parse_budget_is_not_read_and_says_so() -> None:
    """What the decoders may read of one message is capped; calls past the cap come back as one error, not silence."""
    one = '<tool_call>{"name": "get_weather", "arguments": {"city": "' + "x" * 1000 + '"}}</tool_call>\n'
    count = PARSE_BUDGET_CHARS // len(one) + 50
    result = parse_tool_calls(one * count)
    assert 0 < len(result.calls) < count
    assert len(result.errors) == 1 and "too long" in result.errors[0].reason
    # a long message of prose and a call under the cap is read as before
    assert only_call("Some prose. " * 10_000 + "\n" + one).name == "get_weather"
    # far past the cap the time stays linear
    text = build(ADVERSARIAL_SHAPES["lines of nested calls"], 2_000_000)
    assert parse_seconds(text) < seconds_allowed(text)
