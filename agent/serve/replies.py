"""What the server answers: OpenAI-shaped errors, a whole `chat.completion`, and a token-by-token SSE stream.

The status of a response is decided before its body starts; a stream therefore starts at its request's first piece
of text (`_Routes.stream` in `agent.serve.app`), and a failure after that arrives as an error event in the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from agent.backends.protocol import Generation
from agent.backends.streaming import unstreamed
from agent.errors import ContextLengthError
from agent.serve.wire import (
    DONE_EVENT,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionIn,
    Choice,
    ChunkChoice,
    ErrorBody,
    Usage,
    stream_pieces,
)
from skills.errors import HabitloopError, SkillNotFoundError, UserError

log = logging.getLogger("habitloop.serve")


# --------------------------------------------------------------------------------------------------------- errors


def error_response(
    status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> JSONResponse:
    body = ErrorBody.of(message, kind=kind, code=code, param=param)
    return JSONResponse(body.model_dump(), status_code=status)


def response_for(error: BaseException) -> JSONResponse:
    if isinstance(error, SkillNotFoundError):
        return error_response(404, str(error), code="model_not_found", param="model")
    if isinstance(error, ContextLengthError):
        return error_response(400, str(error), code="context_length_exceeded", param="messages")
    if isinstance(error, UserError):
        return error_response(400, str(error))
    if isinstance(error, HabitloopError):
        return error_response(500, str(error), kind="server_error")
    log.exception("generation failed", exc_info=error)
    return error_response(500, f"the model failed: {type(error).__name__}: {error}", kind="server_error")


def unauthorized() -> JSONResponse:
    return error_response(
        401,
        "missing or wrong API key: send it as `Authorization: Bearer KEY`",
        kind="authentication_error",
        code="invalid_api_key",
    )


# --------------------------------------------------------------------------------------------------------- replies

END = object()  # queued after a streamed request's last piece, when its future is done


def _finish(generation: Generation, max_tokens: int) -> str:
    return "length" if generation.completion_tokens >= max_tokens else "stop"


def reply(body: ChatCompletionIn, generation: Generation, max_tokens: int) -> Response:
    """The whole answer as one `chat.completion` object."""
    usage = Usage.of(generation.prompt_tokens, generation.completion_tokens)
    choice = Choice(message=AssistantMessage(content=generation.text), finish_reason=_finish(generation, max_tokens))
    whole = ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=body.model, choices=[choice], usage=usage
    )
    return JSONResponse(whole.model_dump())


def streamed(
    body: ChatCompletionIn, future: Future[Generation], pieces: asyncio.Queue[Any], first: Any, max_tokens: int
) -> Response:
    """`chat.completion.chunk` events: each piece of text as the model produces it (`first` is the one already
    taken from `pieces`, or `END`), then whatever the stream still owes (all of it, a word at a time, from a
    backend that does not stream), the finish reason, usage when asked, `data: [DONE]`. A model failure after the
    response has started arrives as an OpenAI error event before `[DONE]`."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> str:
        choice = ChunkChoice(delta=delta, finish_reason=finish_reason)
        event = ChatCompletionChunk(id=completion_id, created=created, model=body.model, choices=[choice])
        return event.event(include_usage=body.include_usage)

    async def events() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        sent, piece = [], first
        while piece is not END:
            sent.append(piece)
            yield chunk({"content": piece})
            piece = await pieces.get()
        try:
            generation = future.result()
        except Exception as error:  # the status is sent already: the error goes in the stream, as OpenAI's does
            yield f"data: {bytes(response_for(error).body).decode()}\n\n"
            yield DONE_EVENT
            return
        for rest in stream_pieces(unstreamed(generation.text, "".join(sent))):
            if rest:
                yield chunk({"content": rest})
                await asyncio.sleep(0)  # let a disconnect be noticed between chunks
        yield chunk({}, _finish(generation, max_tokens))
        if body.include_usage:
            usage = Usage.of(generation.prompt_tokens, generation.completion_tokens)
            tail = ChatCompletionChunk(id=completion_id, created=created, model=body.model, choices=[], usage=usage)
            yield tail.event(include_usage=True)
        yield DONE_EVENT

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
