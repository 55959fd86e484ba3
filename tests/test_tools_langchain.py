"""LangChain `BaseTool`s used as habitloop tools, through `from_langchain` and `ToolRegistry.register`."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.tools import StructuredTool, ToolException
from langchain_core.tools import tool as lc_tool

from skills.errors import UserError
from tools import Tool, ToolRegistry, calculator, from_langchain, parse_tool_calls, validate_call
from tools.langchain import is_langchain_tool


@lc_tool
def multiply(a: int, b: int = 2) -> int:
    """Multiply two integers.

    Args:
        a: the first factor.
        b: the second factor.
    """
    return a * b


@lc_tool
async def shout(text: str) -> str:
    """Upper-case a text."""
    await asyncio.sleep(0)
    return text.upper()


def _refuse(path: str) -> str:
    raise ToolException(f"cannot open {path}")


refuse = StructuredTool.from_function(_refuse, name="open_file", description="Open a file.")


def test_schema_comes_from_langchain() -> None:
    converted = from_langchain(multiply)
    assert isinstance(converted, Tool) and converted.name == "multiply"
    assert converted.description.startswith("Multiply two integers.")
    parameters = converted.parameters
    assert parameters["type"] == "object" and parameters["required"] == ["a"]
    assert parameters["properties"]["a"]["type"] == "integer"
    assert parameters["properties"]["b"]["default"] == 2
    assert converted.openai_schema()["function"]["name"] == "multiply"


def test_invoke_and_ainvoke_go_through_langchain() -> None:
    converted = from_langchain(multiply)
    assert converted.invoke({"a": 3}).output == "6"
    assert asyncio.run(converted.ainvoke({"a": 3, "b": 5})).output == "15"
    assert converted(a=4) == 8  # calling the Tool calls LangChain's invoke
    async_tool = from_langchain(shout)
    assert async_tool.invoke({"text": "hi"}).output == "HI"
    assert asyncio.run(async_tool.ainvoke({"text": "hey"}, timeout=5)).output == "HEY"


def test_validation_errors_name_the_field() -> None:
    converted = from_langchain(multiply)
    result = converted.invoke({"a": "three"})
    assert not result.ok and "invalid arguments for tool 'multiply'" in (result.error or "")
    assert "'a'" in (result.error or "")
    missing = converted.invoke({})
    assert not missing.ok and "'a': required argument is missing" in (missing.error or "")


def test_tool_exceptions_become_error_results() -> None:
    result = from_langchain(refuse).invoke({"path": "x"})
    assert not result.ok and result.error == "tool 'open_file' raised ToolException: cannot open x"


def test_registry_accepts_langchain_tools_directly() -> None:
    registry = ToolRegistry([calculator, multiply])
    assert registry.names() == ["calculator", "multiply"]
    assert isinstance(registry.get("multiply"), Tool)
    with pytest.raises(UserError, match="already registered"):
        registry.register(multiply)
    call = parse_tool_calls('<tool_call>{"name": "multiply", "arguments": {"a": 7}}</tool_call>').calls[0]
    assert validate_call(call, registry) is call
    assert registry.get(call.name).invoke(call.arguments).output == "14"


def test_names_and_descriptions_can_be_overridden() -> None:
    spaced = StructuredTool.from_function(lambda q: q, name="web search", description="Search the web.")
    with pytest.raises(UserError, match="invalid tool name 'web search'"):
        from_langchain(spaced)
    renamed = from_langchain(spaced, name="web_search", description="Search.")
    assert (renamed.name, renamed.description) == ("web_search", "Search.")


def test_non_langchain_objects_are_refused() -> None:
    assert is_langchain_tool(multiply) and not is_langchain_tool(calculator) and not is_langchain_tool(object())
    with pytest.raises(UserError, match="needs a langchain_core BaseTool"):
        from_langchain(calculator)
