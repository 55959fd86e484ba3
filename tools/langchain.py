"""Use LangChain tools as habitloop tools: `from_langchain(base_tool)`, or `ToolRegistry.register(base_tool)`.

langchain-core is imported only when one of its tools is converted: importing `tools` never needs it. The schema
comes from LangChain's own `convert_to_openai_tool`, validation from the tool's `tool_call_schema` (the arguments
the model supplies, without LangChain's injected ones), and the call goes through `.invoke` / `.ainvoke`, so the
tool behaves exactly as it does inside LangChain.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from pydantic import BaseModel

from skills.errors import UserError
from tools.schema import clean_schema
from tools.tool import Tool


def is_langchain_tool(obj: object) -> bool:
    """Whether `obj` is a LangChain `BaseTool`, without importing langchain-core (if it is not loaded, it cannot be)."""
    module = sys.modules.get("langchain_core.tools")
    base_tool = getattr(module, "BaseTool", None) if module is not None else None
    return isinstance(base_tool, type) and isinstance(obj, base_tool)


def from_langchain(base_tool: Any, *, name: str | None = None, description: str | None = None) -> Tool:
    """Adapt a LangChain `BaseTool` into a `Tool`.

    Args:
        base_tool: any `langchain_core.tools.BaseTool` (e.g. made with LangChain's `@tool` or `StructuredTool`).
        name: a name to use instead of the tool's own (needed when its name is not a valid tool name).
        description: a description to use instead of the tool's own.

    The result validates arguments with the tool's `tool_call_schema` when that is a pydantic model, then calls
    `base_tool.invoke(arguments)` (or `ainvoke` from `Tool.ainvoke`) with the arguments as given. Exceptions the
    LangChain tool raises (a `ToolException`, a validation error) become error results like any tool's.
    """
    try:
        from langchain_core.tools import BaseTool
        from langchain_core.utils.function_calling import convert_to_openai_tool
    except ImportError as error:  # pragma: no cover - langchain-core comes with langgraph, a dependency
        raise UserError("langchain-core is not installed", hint="pip install langchain-core") from error

    if not isinstance(base_tool, BaseTool):
        raise UserError(f"from_langchain needs a langchain_core BaseTool, got {type(base_tool).__name__}")
    try:
        function = convert_to_openai_tool(base_tool)["function"]
    except Exception as error:  # LangChain could not describe the tool's schema
        raise UserError(f"cannot build a schema for LangChain tool {base_tool.name!r}: {error}") from error
    schema = base_tool.tool_call_schema
    args_model = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None
    parameters = function.get("parameters") or {"type": "object", "properties": {}}

    def run(**arguments: Any) -> Any:
        return base_tool.invoke(arguments)

    async def arun(**arguments: Any) -> Any:
        return await base_tool.ainvoke(arguments)

    return Tool(
        name=name if name is not None else base_tool.name,
        description=description if description is not None else inspect.cleandoc(function.get("description") or ""),
        parameters=clean_schema(parameters),
        # A tool built from a coroutine alone cannot run synchronously in LangChain: `invoke` then runs `ainvoke`.
        func=None if _async_only(base_tool) else run,
        afunc=arun,
        args_model=args_model,
    )


def _async_only(base_tool: Any) -> bool:
    """A `StructuredTool` (or `Tool`) made from a coroutine function only: its sync `invoke` raises."""
    return getattr(base_tool, "coroutine", None) is not None and getattr(base_tool, "func", True) is None
