"""The OpenAI wire format this server speaks: the request it honours, the replies and errors it sends.

Requests are parsed and validated in one pass (`parse_request`); replies are built as pydantic models and sent as
their `model_dump()`, field order as OpenAI's (clients and tests compare the JSON, not just its meaning).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# --------------------------------------------------------------------------------------------------------- requests


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str = "text"
    text: str = ""


class ChatMessageIn(BaseModel):
    """One message of a request. `developer` (OpenAI's newer name for system) is read as `system`."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def as_message(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content if part.type == "text")
        return {"role": "system" if self.role == "developer" else self.role, "content": content or ""}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """The part of OpenAI's chat completion request this server honours; other fields are ignored.

    `temperature` defaults to 0 (greedy, reproducible), not OpenAI's 1: pass it to sample.
    """

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request (ask again for more)")

    @field_validator("model")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk (OpenAI's `stream_options.include_usage`)."""
        return bool(self.stream_options and self.stream_options.include_usage)


class BadRequestBody(Exception):
    """A body that is not JSON (`code` "invalid_json") or not a valid request ("invalid_request"): a 400."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def parse_request(raw: bytes) -> ChatCompletionIn:
    """The request, parsed and validated in one pass by pydantic's JSON parser (jiter), or `BadRequestBody`.

    Not `json.loads`: jiter refuses what would break later instead of passing it on. It bounds nesting (a body of
    400k `[` is an error, not a RecursionError), refuses lone surrogates (`"\\ud800"` would fail in the tokenizer or
    when the reply is encoded), invalid UTF-8 (RFC 8259: JSON on the wire is UTF-8) and numbers out of range.
    """
    try:
        return ChatCompletionIn.model_validate_json(raw)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False)
        invalid_json = next((e for e in problems if e["type"] == "json_invalid"), None)
        if invalid_json is not None:
            raise BadRequestBody(f"the request body is not valid JSON: {invalid_json['msg']}", "invalid_json") from None
        listed = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise BadRequestBody(f"invalid request: {listed}{more}", "invalid_request") from None


# --------------------------------------------------------------------------------------------------------- replies


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    """A whole reply (`stream: false`)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, str] = Field(description="what this chunk adds: the role first, then content pieces, then {}")
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a stream. `usage` is sent (as null, then on a last choice-less chunk) only when
    the request asked for it: a client that did not ask sees no `usage` key at all."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None

    def event(self, *, include_usage: bool) -> str:
        """The chunk as one SSE `data:` line."""
        return f"data: {json.dumps(self.model_dump(exclude=None if include_usage else {'usage'}))}\n\n"


DONE_EVENT = "data: [DONE]\n\n"

_PIECE = re.compile(r"\s*\S+\s*|\s+")


def stream_pieces(text: str) -> list[str]:
    """Stream deltas: a word each, with its surrounding spaces, so that joining them gives the text back."""
    return _PIECE.findall(text) or [""]


def completion_text(events: Sequence[str]) -> str:
    """Join the content deltas of `data: ...` SSE lines (for tests and clients without an SSE parser)."""
    text = []
    for line in events:
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


# --------------------------------------------------------------------------------------------------------- errors

MAX_ERROR_CHARS = 2000  # an error echoes parts of the request (a model name): never megabytes of it


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail

    @classmethod
    def of(
        cls, message: str, *, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None
    ) -> ErrorBody:
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 1] + "…"
        return cls(error=ErrorDetail(message=message, type=kind, param=param, code=code))
