"""The system prompt: the tools' JSON schemas and the one call format the parser expects (DESIGN.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from skills.messages import ChatMessage

CALL_FORMAT = '<tool_call>{"name": "<tool name>", "arguments": {<arguments as JSON>}}</tool_call>'

_SYSTEM = """You are a helpful assistant with tools.
To use a tool, reply with exactly one line per call, in this format:
{call_format}
After each call you receive the tool's result. When you know the answer, reply in plain text without any tool call.

Available tools (JSON schema):
{schemas}"""


def system_prompt(schemas: Iterable[dict[str, Any]]) -> str | None:
    """The system prompt listing `schemas` (OpenAI function format); None when there are no tools.

    With no tools there is no system prompt at all: the base (and its skills) then see exactly what they were
    trained on, the chat template's own default.
    """
    listed = [
        json.dumps(schema["function"] if "function" in schema else schema, ensure_ascii=False) for schema in schemas
    ]
    if not listed:
        return None
    return _SYSTEM.format(call_format=CALL_FORMAT, schemas="\n".join(listed))


def tool_result(name: str, content: str, ok: bool) -> ChatMessage:
    """The observation a tool result (or a refused call) becomes for the model."""
    prefix = "" if ok else "error: "
    return ChatMessage.tool(f"[{name}] {prefix}{content}")


def tool_result_message(name: str, content: str, ok: bool) -> dict[str, Any]:
    """`tool_result` as the plain dict a thread, a trajectory and a backend hold."""
    return tool_result(name, content, ok).model_dump()


_NOTES = "What the user told you earlier (answer from it when it is relevant):"


def memory_notes(turns: list[str]) -> str:
    """The system message that shows a user's earlier turns (retrieved, or the whole conversation): one home for
    the wording, so that the agent and the memory evaluation show notes the same way. Each turn is one bullet;
    line breaks inside a turn are kept on that bullet's lines."""
    bullets = ["- " + "\n  ".join(turn.strip().splitlines()) for turn in turns if turn.strip()]
    return "\n".join([_NOTES, *bullets])
