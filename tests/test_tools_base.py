"""`@tool`, `Tool.invoke` / `ainvoke`, `ToolResult` and `ToolRegistry`, through the public API of `tools`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Annotated, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from skills.errors import UserError
from tools import Tool, ToolContext, ToolError, ToolRegistry, ToolResult, tool, valid_text, validate_tool_name

ROOT = Path(__file__).resolve().parents[1]


@tool
def add(a: int, b: int = 0) -> int:
    """Add two integers.

    A second paragraph that the model also reads.

    Args:
        a: the first addend.
        b (int, optional): the second addend, which defaults to zero
            when it is not given.

    Returns:
        The sum (this section is not part of the description).
    """
    return a + b


class Point(BaseModel):
    x: int
    y: int = 0


class Unschemable:
    """A type pydantic can neither validate nor describe."""


@tool(name="point-norm", description="Manhattan norm of a point.")
def norm(point: Point, unit: Literal["m", "km"] = "m") -> str:
    """Ignored: description= wins."""
    return f"{abs(point.x) + abs(point.y)} {unit}"


# ---------------------------------------------------------------------------------------------------------------
# Decoration: schema, description, names.


def test_bare_decorator_builds_schema_from_signature_and_docstring() -> None:
    assert isinstance(add, Tool)
    assert add.name == "add"
    assert add.description == "Add two integers.\n\nA second paragraph that the model also reads."
    assert add.parameters == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "description": "the first addend."},
            "b": {
                "type": "integer",
                "default": 0,
                "description": "the second addend, which defaults to zero when it is not given.",
            },
        },
        "required": ["a"],
        "additionalProperties": False,
    }


def test_openai_schema_shape() -> None:
    assert add.openai_schema() == {
        "type": "function",
        "function": {"name": "add", "description": add.description, "parameters": add.parameters},
    }


def test_decorator_with_overrides_and_nested_model() -> None:
    """What habitloop adds to pydantic for a model-typed argument: the overrides win over the docstring, the nested
    model's schema loses its titles too, the function receives the validated model (not the model's dict), and a
    bad nested field is reported by its dotted path under the tool's name."""
    assert norm.name == "point-norm"
    assert norm.description == "Manhattan norm of a point."
    assert "title" not in norm.parameters["$defs"]["Point"]
    assert all("title" not in prop for prop in norm.parameters["$defs"]["Point"]["properties"].values())
    result = norm.invoke({"point": {"x": -3, "y": 4}, "unit": "km"})  # .x on a dict would raise AttributeError
    assert result.ok and result.output == "7 km"
    bad = norm.invoke({"point": {"x": "far"}})
    assert bad.error is not None and bad.error.startswith("invalid arguments for tool 'point-norm': 'point.x': ")


def test_titles_are_stripped_but_a_parameter_called_title_is_kept() -> None:
    @tool
    def publish(title: str, body: str = "") -> str:
        """Publish a post.

        Args:
            title: the headline.
        """
        return title

    assert set(publish.parameters["properties"]) == {"title", "body"}
    assert "title" not in publish.parameters
    assert all("title" not in prop for prop in publish.parameters["properties"].values())


def test_field_description_beats_docstring_and_constraints_validate() -> None:
    @tool
    def repeat(
        text: Annotated[str, Field(description="from Field")],
        times: int = Field(1, ge=1, le=3, description="also from Field"),
    ) -> str:
        """Repeat text.

        Args:
            text: from the docstring.
            times: from the docstring.
        """
        return text * times

    props = repeat.parameters["properties"]
    assert props["text"]["description"] == "from Field"
    assert props["times"]["description"] == "also from Field"
    assert repeat.parameters["required"] == ["text"]
    assert repeat.invoke({"text": "ab", "times": 2}).output == "abab"
    result = repeat.invoke({"text": "ab", "times": 9})
    assert result.error is not None and "'times'" in result.error and "less than or equal to 3" in result.error


def test_parameters_named_like_pydantic_attributes_work_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @tool
        def fetch(json: str, schema: int, model_config: bool = False) -> str:
            """Fetch.

            Args:
                json: a payload.
            """
            return f"{json}|{schema}|{model_config}"

    assert set(fetch.parameters["properties"]) == {"json", "schema", "model_config"}
    assert fetch.parameters["properties"]["json"]["description"] == "a payload."
    assert fetch.invoke({"json": "x", "schema": 2}).output == "x|2|False"
    assert "'schema'" in (fetch.invoke({"json": "x"}).error or "")


def test_decorated_function_is_still_callable_directly() -> None:
    assert add(2, 3) == 5
    assert add(a=1) == 1


@pytest.mark.parametrize("name", ["", "1abc", "has space", "dot.name", "x" * 65, "ünïcode"])
def test_invalid_tool_names_are_refused(name: str) -> None:
    with pytest.raises(UserError, match="invalid tool name"):
        validate_tool_name(name)
    with pytest.raises(UserError, match="invalid tool name"):
        tool(name=name)(positional_or_keyword)


def test_valid_tool_names() -> None:
    for name in ("a", "_private", "get-weather", "x" * 64, "A1_b-2"):
        assert validate_tool_name(name) == name


def positional_or_keyword(a: int) -> int:
    """A fine function; only the names given to it above are wrong."""
    return a


def untyped(a, b: int) -> int:
    """Untyped."""
    return b


def star_args(*numbers: int) -> int:
    """Var-positional."""
    return sum(numbers)


def star_kwargs(**options: str) -> str:
    """Var-keyword."""
    return ""


def positional_only(a: int, /) -> int:
    """Positional-only."""
    return a


def undocumented(a: int) -> int:
    return a


def stale_docstring(a: int) -> int:
    """Stale.

    Args:
        a: exists.
        b: does not exist.
    """
    return a


def unresolvable(a: Undefined) -> int:  # type: ignore[name-defined]  # noqa: F821
    """Names a type that does not exist."""
    return 0


def unschemable(thing: Unschemable) -> int:
    """Takes a type without a schema."""
    return 0


def two_contexts(ctx: ToolContext, other: ToolContext) -> int:
    """Two contexts."""
    return 0


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (untyped, "parameter 'a' has no type annotation"),
        (star_args, r"\*args and \*\*kwargs"),
        (star_kwargs, r"\*args and \*\*kwargs"),
        (positional_only, "positional-only"),
        (undocumented, "has no description"),
        (stale_docstring, "describes b, which the function does not take"),
        (unresolvable, "cannot resolve the type annotations"),
        (unschemable, "cannot be described as JSON schema"),
        (two_contexts, "only one parameter may receive the ToolContext"),
    ],
)
def test_developer_mistakes_raise_user_error_at_decoration(function: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        tool(function)  # type: ignore[call-overload]


def test_decorating_a_non_callable_is_refused() -> None:
    with pytest.raises(UserError, match="needs a function"):
        tool(42)  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------------------------
# Invocation: validation, errors, output.


def test_invoke_returns_result_with_timing() -> None:
    result = add.invoke({"a": 2, "b": "3"})  # lax mode: "3" is read as 3, as a JSON-speaking model means it
    assert isinstance(result, ToolResult)
    assert result.ok and result.output == "5" and result.error is None
    assert result.name == "add" and result.arguments == {"a": 2, "b": "3"}
    assert result.seconds >= 0
    assert result.observation() == "5"


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        ({}, ["'a': required argument is missing"]),
        ({"a": "seven"}, ["'a':", "valid integer", "'seven'"]),
        ({"a": 1, "c": 2}, ["'c': unknown argument", "takes: a, b"]),
        ([1, 2], ["expected a JSON object", "got list"]),
        ("a=1", ["expected a JSON object", "got str"]),
        ({1: 2}, ["argument names must be strings"]),
    ],
)
def test_invalid_arguments_become_error_results(arguments: object, fragments: list[str]) -> None:
    result = add.invoke(arguments)  # type: ignore[arg-type]
    assert not result.ok and result.output == ""
    assert result.error is not None and "invalid arguments for tool 'add'" in result.error
    for fragment in fragments:
        assert fragment in result.error
    assert result.observation() == f"error: {result.error}"


def test_validation_errors_are_capped_in_size() -> None:
    """Issue 16: 100k bad list items made a 9.7 MB observation. The first few problems are named, the rest counted."""

    @tool
    def total(values: list[int]) -> int:
        """Sum integers.

        Args:
            values: the integers.
        """
        return sum(values)

    bad = {"values": ["x" * 50] * 100_000}
    result = total.invoke(bad)
    assert not result.ok and result.error is not None
    assert len(result.observation()) < 2_000, len(result.observation())
    assert "'values.0': Input should be a valid integer" in result.error
    assert "and 99,995 more problems" in result.error
    # an unknown argument with a huge name, a huge bad value: each problem is cut too
    huge = total.invoke({"values": [1], "v" * 100_000: 1})
    assert huge.error is not None and len(huge.error) < 2_000 and "unknown argument" in huge.error
    assert len(add.invoke({"a": "7" * 100_000 + "x"}).observation()) < 2_000

    # an exception's message is cut as well
    @tool
    def loud() -> str:
        """Fail with a long message."""
        raise ValueError("no " * 1_000_000)

    assert len(loud.invoke().observation()) < 5_000


def test_tool_results_are_valid_text_whatever_the_tool_returns() -> None:
    """Lone surrogates (os.fsdecode of a non-UTF-8 name) become escapes in every tool's output and error."""

    @tool
    def names(kind: str) -> object:
        """Return or raise undecodable names.

        Args:
            kind: how.
        """
        if kind == "raise":
            raise FileNotFoundError("no such file: 'caf\udce9.txt'")
        return "caf\udce9.txt" if kind == "str" else {"name": "caf\udce9.txt"}

    assert names.invoke({"kind": "str"}).output == "caf\\xe9.txt"
    assert "caf\\" in names.invoke({"kind": "dict"}).output  # not JSON (to_json refuses it): the repr, escaped
    raised = names.invoke({"kind": "raise"})
    assert raised.error == "tool 'names' raised FileNotFoundError: no such file: 'caf\\xe9.txt'"
    for result in (names.invoke({"kind": kind}) for kind in ("str", "dict", "raise")):
        result.model_dump_json()
    assert ToolResult(name="x", ok=True, output="\ud800!").output == "\\ud800!"


@given(st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0xE000)))
def test_valid_text_always_encodes_and_leaves_valid_text_alone(text: str) -> None:
    made = valid_text(text)
    made.encode("utf-8")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert made is text


def test_none_arguments_mean_no_arguments() -> None:
    @tool
    def ping() -> str:
        """Answer pong."""
        return "pong"

    assert ping.invoke().output == "pong"
    assert ping.invoke(None).output == "pong"


def test_exceptions_inside_the_tool_become_error_results() -> None:
    @tool
    def explode(kind: str) -> str:
        """Fail on purpose.

        Args:
            kind: which failure.
        """
        if kind == "tool":
            raise ToolError("no such file: notes.txt")
        raise ValueError("boom")

    plain = explode.invoke({"kind": "value"})
    assert not plain.ok and plain.error == "tool 'explode' raised ValueError: boom"
    told = explode.invoke({"kind": "tool"})
    assert not told.ok and told.error == "tool 'explode': no such file: notes.txt"


def test_non_string_outputs_are_json() -> None:
    @tool
    def make(kind: str) -> object:
        """Return a value of some kind.

        Args:
            kind: which.
        """
        return {"dict": {"a": [1, 2.5, None]}, "model": Point(x=1), "none": None, "path": Path("a/b")}[kind]

    assert make.invoke({"kind": "dict"}).output == '{"a":[1,2.5,null]}'
    assert make.invoke({"kind": "model"}).output == '{"x":1,"y":0}'
    assert make.invoke({"kind": "none"}).output == "null"
    assert make.invoke({"kind": "path"}).output == '"a/b"'


# ---------------------------------------------------------------------------------------------------------------
# Context injection.


def test_context_is_injected_and_hidden_from_the_schema(tmp_path: Path) -> None:
    @tool
    def where(label: str, ctx: ToolContext) -> str:
        """Say where the run works.

        Args:
            label: a prefix.
            ctx: injected; documenting it is allowed.
        """
        return f"{label}:{ctx.workspace}:{ctx.run_id}:{ctx.extras.get('user')}"

    assert list(where.parameters["properties"]) == ["label"]
    assert where.ctx_param == "ctx"
    ctx = ToolContext(workspace=str(tmp_path), run_id="r1", extras={"user": "ada"})  # type: ignore[arg-type]
    assert isinstance(ctx.workspace, Path)
    assert where.invoke({"label": "x"}, ctx=ctx).output == f"x:{tmp_path}:r1:ada"
    assert where.invoke({"label": "x"}).output == "x:None:None:None"  # an empty context when none is given
    refused = where.invoke({"label": "x", "ctx": "forged"})
    assert not refused.ok and "'ctx': unknown argument" in (refused.error or "")


def test_optional_context_annotation_is_injected_too() -> None:
    @tool
    def run_id(context: ToolContext | None = None) -> str:
        """The run id."""
        return str(context.run_id if context else "none")

    assert run_id.parameters["properties"] == {}
    assert run_id.invoke({}, ToolContext(run_id="abc")).output == "abc"


# ---------------------------------------------------------------------------------------------------------------
# Async tools and timeouts.


@tool
async def async_double(x: int, ctx: ToolContext) -> int:
    """Double a number, asynchronously.

    Args:
        x: the number.
    """
    await asyncio.sleep(0)
    return 2 * x + len(ctx.extras)


def test_async_tool_through_invoke_and_ainvoke() -> None:
    assert async_double.is_async
    assert async_double.invoke({"x": 4}).output == "8"
    result = asyncio.run(async_double.ainvoke({"x": 4}, ctx=ToolContext(extras={"k": 1})))
    assert result.ok and result.output == "9"
    assert not asyncio.run(async_double.ainvoke({"x": "four"})).ok


def test_sync_invoke_of_async_tool_inside_a_running_loop() -> None:
    async def main() -> ToolResult:
        return async_double.invoke({"x": 5})

    assert asyncio.run(main()).output == "10"


def test_sync_tool_through_ainvoke() -> None:
    assert asyncio.run(add.ainvoke({"a": 1, "b": 2})).output == "3"
    assert asyncio.run(add.ainvoke({"a": 1, "b": 2}, timeout=5)).output == "3"


def test_sync_tool_timeout_abandons_the_thread() -> None:
    release = threading.Event()

    @tool
    def hang() -> str:
        """Block until released."""
        release.wait(10)
        return "released"

    try:
        start = time.perf_counter()
        result = hang.invoke({}, timeout=0.05)
        assert time.perf_counter() - start < 5
        assert not result.ok and result.error == "tool 'hang' timed out after 0.05 s"
        result = asyncio.run(hang.ainvoke({}, timeout=0.05))
        assert not result.ok and "timed out" in (result.error or "")
    finally:
        release.set()


def test_async_tool_timeout_cancels_it() -> None:
    cancelled = threading.Event()

    @tool
    async def nap(seconds: float) -> str:
        """Sleep.

        Args:
            seconds: how long.
        """
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "awake"

    result = nap.invoke({"seconds": 10}, timeout=0.05)
    assert not result.ok and "timed out after 0.05 s" in (result.error or "")
    assert cancelled.is_set()
    assert nap.invoke({"seconds": 0}, timeout=5).output == "awake"


def test_async_tool_that_blocks_its_loop_still_times_out() -> None:
    release = threading.Event()

    @tool
    async def rude() -> str:
        """Block the event loop (a bug in a tool, not something to do)."""
        release.wait(10)
        return "late"

    try:
        start = time.perf_counter()
        result = rude.invoke({}, timeout=0.05)
        assert time.perf_counter() - start < 5
        assert not result.ok and "timed out" in (result.error or "")
    finally:
        release.set()


def test_a_timeout_error_raised_by_the_tool_is_not_our_timeout() -> None:
    @tool
    def flaky() -> str:
        """Raise TimeoutError itself."""
        raise TimeoutError("upstream did not answer")

    for result in (flaky.invoke({}, timeout=5), asyncio.run(flaky.ainvoke({}, timeout=5))):
        assert result.error == "tool 'flaky' raised TimeoutError: upstream did not answer"


@pytest.mark.parametrize("timeout", [0, -1.0, True])
def test_bad_timeout_is_a_developer_error(timeout: float) -> None:
    with pytest.raises(UserError, match="timeout must be a positive number"):
        add.invoke({"a": 1}, timeout=timeout)
    with pytest.raises(UserError, match="timeout must be a positive number"):
        asyncio.run(add.ainvoke({"a": 1}, timeout=timeout))


# ---------------------------------------------------------------------------------------------------------------
# Registry.


def test_registry_register_get_iterate() -> None:
    registry = ToolRegistry([add])
    assert registry.register(norm) is norm
    assert len(registry) == 2
    assert [t.name for t in registry] == ["add", "point-norm"] == registry.names()
    assert registry.get("add") is add
    assert "add" in registry and "nope" not in registry and 3 not in registry
    assert registry.schemas() == [add.openai_schema(), norm.openai_schema()]
    assert "point-norm" in repr(registry)


def test_registry_refuses_duplicates() -> None:
    registry = ToolRegistry([add])
    other = tool(name="add")(positional_or_keyword)  # a different function under a taken name
    with pytest.raises(UserError, match="'add' is already registered"):
        registry.register(other)
    assert registry.get("add") is add


def test_lambdas_need_a_name_and_annotations() -> None:
    with pytest.raises(UserError, match="invalid tool name '<lambda>'"):
        tool(lambda x: x)
    with pytest.raises(UserError, match="no type annotation"):
        tool(name="ident", description="Identity.")(lambda x: x)


def test_registry_get_unknown_lists_known_names() -> None:
    registry = ToolRegistry([add, norm])
    with pytest.raises(UserError, match="unknown tool 'sub'; registered tools: add, point-norm"):
        registry.get("sub")
    with pytest.raises(UserError, match="registered tools: none"):
        ToolRegistry().get("sub")


def test_registry_refuses_plain_functions_and_other_objects() -> None:
    def plain(a: int) -> int:
        """Plain."""
        return a

    with pytest.raises(UserError, match="decorate the function with @tool"):
        ToolRegistry().register(plain)
    with pytest.raises(UserError, match="not a Tool"):
        ToolRegistry().register("add")


def test_registry_register_works_as_a_decorator() -> None:
    registry = ToolRegistry()

    @registry.register
    @tool
    def shout(text: str) -> str:
        """Upper-case text.

        Args:
            text: what to shout.
        """
        return text.upper()

    assert registry.get("shout").invoke({"text": "hi"}).output == "HI"


def test_importing_tools_needs_neither_langchain_nor_agent_nor_memory() -> None:
    probe = (
        "import sys, tools; "
        "bad = [m for m in ('langchain_core', 'agent', 'memory') if m in sys.modules]; "
        "assert not bad, bad; print(sorted(tools.__all__) == tools.__all__)"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
