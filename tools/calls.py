"""Tool calls as data: the `ToolCall` the model asked for, the `CallError` of one that cannot be read or would be
refused, what parsing a message found (`ParseResult`), and checking a call against the registry (`validate_call`).

Reading calls out of text is `tools.parser` (`parse_tool_calls`), with the JSON and Python-style forms in
`tools.json_calls` and `tools.python_calls`; they build their results with the helpers here, so every call's strings
are valid text and every error's snippet is cut the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tools.registry import ToolRegistry
from tools.tool import valid_text

CallFormat = Literal["tag", "fenced", "json", "python"]
SNIPPET_CHARS = 200


class ToolCall(BaseModel):
    """One call the model asked for: which tool, with which arguments, and the text it was read from."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the tool's name, as the model wrote it")
    arguments: dict[str, Any] = Field(default_factory=dict, description="the arguments, not yet validated")
    raw: str = Field("", description="the text the call was read from")
    format: CallFormat = Field("tag", description="how the model wrote the call (see `parse_tool_calls`)")


class CallError(BaseModel):
    """A call that could not be read (`stage="parse"`) or would be refused by its tool (`stage="validate"`)."""

    model_config = ConfigDict(frozen=True)

    reason: str = Field(description="what is wrong, written for the model")
    raw: str = Field("", description=f"the offending text, cut to {SNIPPET_CHARS} characters")
    name: str | None = Field(None, description="the tool the call named, when that much could be read")
    format: CallFormat | None = Field(None, description="the format the call was attempted in, when known")
    stage: Literal["parse", "validate"] = "parse"

    def observation(self) -> str:
        """The text to show the model so it can fix the call."""
        return f"error: {self.reason}"


class ParseResult(BaseModel):
    """What `parse_tool_calls` found in a message: the calls, the failed attempts, and the rest of the text."""

    model_config = ConfigDict(frozen=True)

    calls: list[ToolCall] = Field(default_factory=list, description="well-formed calls, in order of appearance")
    errors: list[CallError] = Field(default_factory=list, description="attempted calls that could not be read")
    text_outside: str = Field("", description="the message without the calls and failed attempts, stripped")

    @property
    def attempted(self) -> bool:
        """Whether the message tried to call a tool at all (well-formed or not)."""
        return bool(self.calls or self.errors)


def validate_call(call: ToolCall, registry: ToolRegistry) -> ToolCall | CallError:
    """`call` if the registry has its tool and the tool accepts its arguments, else a `CallError` saying why."""

    def refuse(reason: str) -> CallError:
        return CallError(reason=reason, raw=snippet(call.raw), name=call.name, format=call.format, stage="validate")

    if call.name not in registry:
        known = ", ".join(registry.names())
        return refuse(
            f"unknown tool {quoted_name(call.name)}; " + (f"the tools are: {known}" if known else "no tools exist")
        )
    problem = registry.get(call.name).check_arguments(call.arguments)
    return refuse(problem) if problem is not None else call


# What reading one attempted call gives: the call, or why it could not be read.
ParsedItem = ToolCall | CallError


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted_name(name: object) -> str:
    """A name the model wrote, quoted for an error message and cut: it may be any length."""
    return snippet(repr(name), 60)


def call_error(reason: str, raw: str, fmt: CallFormat | None = None, name: str | None = None) -> CallError:
    return CallError(reason=reason, raw=snippet(raw), format=fmt, name=name)


def make_call(name: str, arguments: dict[str, Any], raw: str, fmt: CallFormat) -> ParsedItem:
    """The call, its strings made valid text: a JSON `"\\udcff"` decodes to a lone surrogate, which no trajectory
    can serialize."""
    try:
        arguments = _valid_value(arguments)
    except RecursionError:
        return call_error(f"the arguments of {quoted_name(name)} are nested too deeply", raw, fmt, name)
    return ToolCall(name=valid_text(name), arguments=arguments, raw=raw, format=fmt)


def _valid_value(value: Any) -> Any:
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {valid_text(key) if isinstance(key, str) else key: _valid_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):  # Python literals may be tuples and sets
        return type(value)(_valid_value(item) for item in value)
    return value
