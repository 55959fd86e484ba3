"""The tools one agent may call, by name: `ToolRegistry`, which refuses duplicates and converts LangChain tools."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from skills.errors import UserError
from tools.langchain import from_langchain, is_langchain_tool
from tools.tool import Tool, validate_tool_name


class ToolRegistry:
    """The tools one agent may call, by name. Tools join through `register`, which refuses duplicates.

    `register` also accepts a LangChain `BaseTool` (converted with `from_langchain`); langchain-core is only
    imported when such an object is registered.
    """

    def __init__(self, tools: Iterable[Any] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.register(item)

    def register(self, item: Any) -> Tool:
        """Add a `Tool` (or a LangChain `BaseTool`) and return the `Tool` registered; refuses a taken name."""
        if not isinstance(item, Tool):
            if not is_langchain_tool(item):
                hint = "decorate the function with @tool first" if callable(item) else "pass a Tool"
                raise UserError(f"cannot register {item!r}: it is not a Tool", hint=hint)
            item = from_langchain(item)
        validate_tool_name(item.name)
        if item.name in self._tools:
            raise UserError(f"a tool named {item.name!r} is already registered", hint="rename one of them")
        self._tools[item.name] = item
        return item

    def get(self, name: str) -> Tool:
        """The tool called `name`; `UserError` listing the known names if there is none."""
        try:
            return self._tools[name]
        except (KeyError, TypeError):
            known = ", ".join(self._tools) or "none"
            raise UserError(f"unknown tool {name!r}; registered tools: {known}") from None

    def names(self) -> list[str]:
        """Names of the registered tools, in registration order."""
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool's `openai_schema()`, in registration order: what the system prompt lists."""
        return [registered.openai_schema() for registered in self._tools.values()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({self.names()!r})"
