"""Tools the agent acts through: typed functions with JSON schemas, their registry, and reading calls out of text.

- `@tool` turns a typed function with a Google-style docstring into a `Tool` (schema, validation, `invoke`)
  (`tools.tool`, the schema from `tools.schema`); `ToolContext` (`tools.context`) carries a run's dependencies (the
  workspace folder, ...) into tools that ask for it; a tool raises `ToolError` (`tools.errors`) to tell the model.
- `ToolRegistry` (`tools.registry`) holds the tools an agent may call; it also accepts LangChain tools
  (`from_langchain`, `tools.langchain`).
- `parse_tool_calls` (`tools.parser`, with `tools.json_calls` and `tools.python_calls`) reads `<tool_call>` blocks
  (and the formats small models drift into) out of a message, and `validate_call` (`tools.calls`) checks one against
  the registry; what fails becomes a `CallError` for the model, never an exception.
- Built-ins (`tools.builtins`): a safe `calculator` and workspace file tools (`builtin_tools()`).

Importing this package does not import langchain-core.
"""

from tools.builtins import builtin_tools, calculator, recall, workspace_list, workspace_read, workspace_write
from tools.calls import CallError, ParseResult, ToolCall, validate_call
from tools.context import ToolContext
from tools.errors import ToolError
from tools.langchain import from_langchain
from tools.parser import parse_tool_calls
from tools.registry import ToolRegistry
from tools.tool import Tool, ToolResult, tool, valid_text, validate_tool_name

__all__ = [
    "CallError",
    "ParseResult",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "builtin_tools",
    "calculator",
    "from_langchain",
    "parse_tool_calls",
    "recall",
    "tool",
    "valid_text",
    "validate_call",
    "validate_tool_name",
    "workspace_list",
    "workspace_read",
    "workspace_write",
]
