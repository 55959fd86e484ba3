"""`habitloop serve`: an OpenAI-compatible HTTP API over a `ChatModel`, one model name per skill set.

Routes: `POST /v1/chat/completions` (plain and `stream: true`), `GET /v1/models`, `GET /v1/models/{model}`,
`GET /health`. The `model` of a request names the skills (`agent.backends.naming`): `base`, `tool-habits`,
`tool-habits@3`, `tool-habits+other`. Names are resolved against the skill store at request time (a skill created
while the server runs is served at once; an unpinned name follows promotions and rollbacks).

Every request goes through one `BatchingChatModel`, so concurrent requests of different skills are answered in one
mixed batch. Streaming is not token by token: the reply is generated whole (in its batch) and then sent as OpenAI
`chat.completion.chunk` events, a word at a time, ending with `data: [DONE]`. A client that disconnects while its
request is still queued takes its request out of the queue.

Errors are OpenAI-shaped (`{"error": {"message", "type", "param", "code"}}`): 400 malformed JSON or fields (code
`context_length_exceeded` for messages longer than the base's context, or an explicit `max_tokens` that does not fit
after them; without `max_tokens` the completion gets what the context leaves), 401 a
missing or wrong API key (when one is set), 404 an unknown model or skill (also a skill deleted while the request
waited), 413 a body over `max_body_bytes`, 500 the model failed (the message says why; the server keeps serving).
The server is a Starlette app: `create_app(model, store)` for tests and embedding, `habitloop serve` for people.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent.backends.batching import BatchingChatModel
from agent.backends.naming import BASE_MODEL, format_model_name, parse_model_name
from agent.backends.naming import ModelSkill as SkillRef
from agent.backends.protocol import ChatModel, ChatRequest, Generation
from agent.errors import ContextLengthError
from skills.errors import HabitloopError, InvalidSkillNameError, OperatorError, SkillNotFoundError, UserError
from skills.store import SkillStore

log = logging.getLogger("habitloop.serve")

# --------------------------------------------------------------------------------------------------------- wire types


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


class ServeConfig(BaseModel):
    """How the server behaves; `habitloop serve` fills it from its options."""

    api_key: str | None = Field(None, description="required as `Authorization: Bearer KEY` when set")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies get 413")
    default_max_tokens: int = Field(256, ge=1, description="when a request gives no max_tokens")
    max_tokens_limit: int = Field(2048, ge=1, description="a request asking for more gets 400")
    max_listed_compositions: int = Field(256, ge=0, description="compositions remembered for /v1/models")
    read_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a client has to send a whole request (line, headers, body) from its first byte; "
        "slower connections are closed (slowloris). Answering is not bounded, nor the idle time between requests",
    )


# --------------------------------------------------------------------------------------------------------- names


class ModelCatalog:
    """Resolves model names against the store and remembers the compositions requested, for `/v1/models`."""

    def __init__(self, store: SkillStore, *, max_compositions: int = 256) -> None:
        self.store = store
        self.max_compositions = max_compositions
        self.compositions: OrderedDict[str, float] = OrderedDict()  # name -> first request time

    def resolve(self, model: str) -> list[tuple[str, int]]:
        """(skill, revision) for each component, current revision where none is pinned.

        Raises `SkillNotFoundError` for an unknown skill or revision, `UserError` for a malformed name.
        """
        try:
            refs: list[SkillRef] = parse_model_name(model)
        except UserError as error:  # not even a name: as unknown as any other (OpenAI answers 404 too)
            raise SkillNotFoundError(f"the model {model!r} does not exist: {error.message}", hint=error.hint) from error
        resolved: list[tuple[str, int]] = []
        for name, revision in refs:
            try:
                record = self.store.revision(name, revision)
            except InvalidSkillNameError as error:  # owner/skill: personal instances are not in this store
                raise SkillNotFoundError(
                    f"the model {model!r} does not exist: {name!r} is not a skill of this server's store",
                    hint="GET /v1/models lists what this server serves",
                ) from error
            except SkillNotFoundError as error:
                raise SkillNotFoundError(
                    f"the model {model!r} does not exist: {error.message}",
                    hint="GET /v1/models lists what this server serves",
                ) from error
            resolved.append((name, record.number))
        if len(refs) > 1:
            key = format_model_name(refs, pin=True)
            if key not in self.compositions and len(self.compositions) < self.max_compositions:
                self.compositions[key] = time.time()
        return resolved

    def listing(self) -> list[dict[str, Any]]:
        """OpenAI model objects: the base, every skill of the store (current revision), the compositions asked."""
        entries: list[dict[str, Any]] = [
            {"id": BASE_MODEL, "object": "model", "created": 0, "owned_by": "habitloop", "skills": []}
        ]
        for manifest in sorted(self.store.list(), key=lambda m: m.name):
            entries.append(
                {
                    "id": manifest.name,
                    "object": "model",
                    "created": int(manifest.created_at.timestamp()),
                    "owned_by": "habitloop",
                    "kind": manifest.kind,
                    "description": manifest.description,
                    "revision": manifest.current,
                    "skills": [manifest.name],
                }
            )
        for name, created in self.compositions.items():
            entries.append(
                {
                    "id": name,
                    "object": "model",
                    "created": int(created),
                    "owned_by": "habitloop",
                    "skills": [skill for skill, _ in parse_model_name(name)],
                }
            )
        return entries


# --------------------------------------------------------------------------------------------------------- errors


_MAX_ERROR_CHARS = 2000  # an error echoes parts of the request (a model name): never megabytes of it


def _error(
    status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> JSONResponse:
    if len(message) > _MAX_ERROR_CHARS:
        message = message[: _MAX_ERROR_CHARS - 1] + "…"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def _error_for(error: BaseException) -> JSONResponse:
    if isinstance(error, SkillNotFoundError):
        return _error(404, str(error), code="model_not_found", param="model")
    if isinstance(error, ContextLengthError):
        return _error(400, str(error), code="context_length_exceeded", param="messages")
    if isinstance(error, UserError):
        return _error(400, str(error))
    if isinstance(error, HabitloopError):
        return _error(500, str(error), kind="server_error")
    log.exception("generation failed", exc_info=error)
    return _error(500, f"the model failed: {type(error).__name__}: {error}", kind="server_error")


class _BodyTooLarge(Exception):
    pass


class _BadBody(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _parse_body(raw: bytes) -> ChatCompletionIn:
    """The request, parsed and validated in one pass by pydantic's JSON parser (jiter), or `_BadBody`.

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
            raise _BadBody(f"the request body is not valid JSON: {invalid_json['msg']}", "invalid_json") from None
        listed = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise _BadBody(f"invalid request: {listed}{more}", "invalid_request") from None


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (from Content-Length, or counted while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _wait_or_disconnect(future: Future[Generation], request: Request) -> Generation | None:
    """The generation, or None when the client went away first (its request is then cancelled if still queued)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    result: asyncio.Future[Any] = asyncio.wrap_future(future)
    watcher: asyncio.Future[Any] = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if result in done:
        return result.result()
    future.cancel()  # dropped by the batcher unless its batch already started
    result.cancel()
    return None


# --------------------------------------------------------------------------------------------------------- the app

_PIECE = re.compile(r"\s*\S+\s*|\s+")


def _pieces(text: str) -> list[str]:
    """Stream deltas: a word each, with its surrounding spaces, so that joining them gives the text back."""
    return _PIECE.findall(text) or [""]


def create_app(
    model: ChatModel,
    store: SkillStore,
    config: ServeConfig | None = None,
    *,
    max_batch: int = 8,
    max_wait_ms: float = 10.0,
) -> Starlette:
    """The ASGI app. `model` is wrapped in a `BatchingChatModel` unless it is one (then the caller closes it)."""
    config = config or ServeConfig()
    owns_batcher = not isinstance(model, BatchingChatModel)
    batcher = BatchingChatModel(model, max_batch=max_batch, max_wait_ms=max_wait_ms) if owns_batcher else model
    assert isinstance(batcher, BatchingChatModel)
    catalog = ModelCatalog(store, max_compositions=config.max_listed_compositions)

    def authorized(request: Request) -> bool:
        if config.api_key is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), config.api_key.encode())

    def unauthorized() -> JSONResponse:
        return _error(
            401,
            "missing or wrong API key: send it as `Authorization: Bearer KEY`",
            kind="authentication_error",
            code="invalid_api_key",
        )

    async def chat_completions(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        try:
            raw = await _read_body(request, config.max_body_bytes)
        except _BodyTooLarge:
            return _error(413, f"the request body is larger than {config.max_body_bytes} bytes", code="too_large")
        except ClientDisconnect:
            return Response(status_code=499)
        try:
            body = _parse_body(raw)
        except _BadBody as error:
            return _error(400, str(error), code=error.code)
        asked = body.max_completion_tokens or body.max_tokens
        max_tokens = asked or config.default_max_tokens
        if max_tokens > config.max_tokens_limit:
            return _error(
                400,
                f"max_tokens {max_tokens} is above this server's limit {config.max_tokens_limit}",
                param="max_tokens",
            )
        try:
            skills = catalog.resolve(body.model)
            request_in = ChatRequest(
                messages=[m.as_message() for m in body.messages],
                skills=skills,
                max_new_tokens=max_tokens,
                temperature=body.temperature or 0.0,
            )
            # OpenAI's rule: an explicit max_tokens that does not fit after the prompt is a 400; without one, the
            # completion gets what the context leaves. Counting tokens takes a thread, not the event loop.
            fitted = await asyncio.to_thread(batcher.fit, request_in, strict=asked is not None)
            max_tokens = fitted.max_new_tokens
            future = batcher.submit(fitted)
        except UserError as error:  # SkillNotFoundError (404) and ContextLengthError (400) included
            return _error_for(error)
        try:
            generation = await _wait_or_disconnect(future, request)
        except Exception as error:  # the model's failure for this request only: the batcher isolated it
            return _error_for(error)
        if generation is None:
            return Response(status_code=499)  # nobody reads it; nginx's "client closed request"
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        finish = "length" if generation.completion_tokens >= max_tokens else "stop"
        usage = {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        }
        if not body.stream:
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": body.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": generation.text},
                            "finish_reason": finish,
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
                choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
                event: dict[str, Any] = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body.model,
                    "choices": [choice],
                }
                if include_usage:
                    event["usage"] = None
                return f"data: {json.dumps(event)}\n\n"

            yield chunk({"role": "assistant", "content": ""})
            for piece in _pieces(generation.text):
                yield chunk({"content": piece})
                await asyncio.sleep(0)  # let a disconnect be noticed between chunks
            yield chunk({}, finish)
            if include_usage:
                tail = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body.model,
                    "choices": [],
                    "usage": usage,
                }
                yield f"data: {json.dumps(tail)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    async def models(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        return JSONResponse({"object": "list", "data": catalog.listing()})

    async def one_model(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        name = request.path_params["model"]
        try:
            catalog.resolve(name)
        except UserError as error:
            return _error_for(error)
        listed = {entry["id"]: entry for entry in catalog.listing()}
        return JSONResponse(
            listed.get(name)
            or {"id": name, "object": "model", "created": 0, "owned_by": "habitloop", "skills": parse_model_name(name)}
        )

    async def health(request: Request) -> Response:
        stats = batcher.stats.model_dump()
        return JSONResponse({"status": "ok", "batching": stats})

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return _error(error.status_code, f"{request.method} {request.url.path}: {error.detail}", code="not_found")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owns_batcher:
                batcher.close()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model:path}", one_model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.catalog = catalog
    app.state.config = config
    return app


# --------------------------------------------------------------------------------------------------------- uvicorn


def read_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools, or h11 without it) with a deadline for receiving each request.

    uvicorn has no such timeout (its keep-alive timer is reset by every byte received, and ASGI code only runs once
    the headers are complete), so a client that sends half a request line, half its headers or half its body holds
    a connection forever. The deadline is armed when a connection opens and when the next request of a kept-alive
    connection starts to arrive; it is disarmed once the request's body is complete, so producing and streaming the
    answer is never cut. When it passes, the connection is closed.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    protocol: Any = AutoHTTPProtocol

    class ReadDeadlineProtocol(protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_at: Any = None  # the request cycle current when the deadline was armed (None: none yet)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            if self._received():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._armed_at = self.cycle
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _received(self) -> bool:
            """A request newer than the armed one has arrived, body and all."""
            return self.cycle is not None and self.cycle is not self._armed_at and not self.cycle.more_body

        def _expired(self) -> None:
            self._deadline = None
            if self._received() or self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # complete after all, already closing, or upgraded to another protocol
            log.info("closing a connection that did not send its request within %.1f s", seconds)
            self.transport.close()

    return ReadDeadlineProtocol


def _uvicorn_config(app: Any, **options: Any) -> Any:
    """The uvicorn settings both entry points share: the app's `ServeConfig.read_timeout` on every connection."""
    import uvicorn

    config = getattr(getattr(app, "state", None), "config", None)
    read_timeout = config.read_timeout if isinstance(config, ServeConfig) else ServeConfig().read_timeout
    return uvicorn.Config(app, http=read_deadline_protocol(read_timeout), **options)


def serve_local(
    settings: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    max_batch: int = 8,
    max_wait_ms: float = 10.0,
    log_level: str = "info",
) -> None:
    """Load the shared base and the store, and serve them until interrupted (what `habitloop serve` runs)."""
    import uvicorn

    app = local_app(settings, config=config, max_batch=max_batch, max_wait_ms=max_wait_ms)
    uvicorn.Server(_uvicorn_config(app, host=host, port=port, log_level=log_level)).run()


def local_app(
    settings: Any, *, config: ServeConfig | None = None, max_batch: int = 8, max_wait_ms: float = 10.0
) -> Any:
    """The app over this process's base model (`LocalChatModel` on a `Residency`) and the configured store."""
    from agent.backends.local import LocalChatModel
    from agent.base import load_base
    from skills.residency import Residency

    base = load_base(settings=settings)
    store = SkillStore(settings.skills_dir, base_fingerprint=base.fingerprint)
    residency = Residency(base.model, store, max_hot=settings.max_hot, max_warm=settings.max_warm)
    return create_app(LocalChatModel(base, residency), store, config, max_batch=max_batch, max_wait_ms=max_wait_ms)


def completion_text(events: Sequence[str]) -> str:
    """Join the content deltas of `data: ...` SSE lines (for tests and clients without an SSE parser)."""
    text = []
    for line in events:
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


@contextmanager
def running_server(app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """Run `app` with uvicorn in a thread (a free loopback port by default); yields its base URL (`.../v1`).

    For tests, benchmarks and embedding; on exit the server shuts down (and the app's lifespan closes its batcher).
    """
    import socket
    import threading

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(_uvicorn_config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="habitloop-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise OperatorError("the server did not start", hint="see the log above")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
