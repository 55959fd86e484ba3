"""`habitloop serve`: an OpenAI-compatible HTTP API over a `ChatModel`, one model name per skill set.

Routes: `POST /v1/chat/completions` (plain and `stream: true`), `GET /v1/models`, `GET /v1/models/{model}`,
`GET /health`. The `model` of a request names the skills (`agent.backends.naming`): `base`, `tool-habits`,
`tool-habits@3`, `tool-habits+other`. Names are resolved against the skill store at request time
(`agent.serve.catalog`: a skill created while the server runs is served at once; an unpinned name follows promotions
and rollbacks). The request, reply and error bodies are the models of `agent.serve.wire`.

Every request goes through one `BatchingChatModel`, so concurrent requests of different skills are answered in one
mixed batch. Streaming is token by token (`agent.backends.streaming`): the response starts when the first piece of
text is decoded, each piece is one OpenAI `chat.completion.chunk` event as its decode step ends, and the stream ends
with `data: [DONE]`; a backend that cannot stream sends the whole reply at its end, a word at a time. A client that
disconnects while its request is still queued takes its request out of the queue.

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
import logging
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.backends.batching import BatchingChatModel
from agent.backends.protocol import ChatModel, ChatRequest, Generation
from agent.runtime import local_runtime
from agent.serve.catalog import ModelCatalog
from agent.serve.replies import END, error_response, reply, response_for, streamed, unauthorized
from agent.serve.wire import (
    BadRequestBody,
    ChatCompletionIn,
    completion_text,
    parse_request,
)
from skills.errors import OperatorError, UserError
from skills.store import SkillStore

__all__ = ["ServeConfig", "completion_text", "create_app", "local_app", "running_server", "serve_local"]

log = logging.getLogger("habitloop.serve")


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


# --------------------------------------------------------------------------------------------------------- errors


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return error_response(error.status_code, f"{request.method} {request.url.path}: {error.detail}", code="not_found")


# --------------------------------------------------------------------------------------------------------- transport


class _BodyTooLarge(Exception):
    pass


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


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _first_or_disconnect(awaitable: Any, request: Request) -> asyncio.Future[Any] | None:
    """`awaitable` as a finished future, or None when the client went away first (it is then cancelled)."""
    task: asyncio.Future[Any] = asyncio.ensure_future(awaitable)
    watcher: asyncio.Future[Any] = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task
    task.cancel()
    return None


async def _wait_or_disconnect(future: Future[Generation], request: Request) -> Generation | None:
    """The generation, or None when the client went away first (its request is then cancelled if still queued)."""
    done = await _first_or_disconnect(asyncio.wrap_future(future), request)
    if done is None:
        future.cancel()  # dropped by the batcher unless its batch already started
        return None
    return done.result()


# --------------------------------------------------------------------------------------------------------- the app


class _Routes:
    """The endpoints, over one batcher, one catalog and one config."""

    def __init__(self, batcher: BatchingChatModel, catalog: ModelCatalog, config: ServeConfig) -> None:
        self.batcher = batcher
        self.catalog = catalog
        self.config = config

    def authorized(self, request: Request) -> bool:
        if self.config.api_key is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.config.api_key.encode())

    async def read_request(self, request: Request) -> ChatCompletionIn | Response:
        """The parsed request, or the response that refuses it (413, 400, or 499 when the client left)."""
        try:
            raw = await _read_body(request, self.config.max_body_bytes)
        except _BodyTooLarge:
            return error_response(
                413, f"the request body is larger than {self.config.max_body_bytes} bytes", code="too_large"
            )
        except ClientDisconnect:
            return Response(status_code=499)
        try:
            return parse_request(raw)
        except BadRequestBody as error:
            return error_response(400, str(error), code=error.code)

    async def fitted(self, body: ChatCompletionIn, max_tokens: int, *, strict: bool) -> ChatRequest:
        """The model request: skills resolved, the completion budget fitted to the context.

        OpenAI's rule: an explicit max_tokens (`strict`) that does not fit after the prompt is a 400; without one, the
        completion gets what the context leaves. Counting tokens takes a thread, not the event loop.
        """
        request = ChatRequest(
            messages=[m.as_message() for m in body.messages],
            skills=self.catalog.resolve(body.model),
            max_new_tokens=max_tokens,
            temperature=body.temperature or 0.0,
        )
        return await asyncio.to_thread(self.batcher.fit, request, strict=strict)

    async def chat_completions(self, request: Request) -> Response:
        if not self.authorized(request):
            return unauthorized()
        body = await self.read_request(request)
        if isinstance(body, Response):
            return body
        asked = body.max_completion_tokens or body.max_tokens
        max_tokens = asked or self.config.default_max_tokens
        if max_tokens > self.config.max_tokens_limit:
            return error_response(
                400,
                f"max_tokens {max_tokens} is above this server's limit {self.config.max_tokens_limit}",
                param="max_tokens",
            )
        try:
            fitted = await self.fitted(body, max_tokens, strict=asked is not None)
            if body.stream:
                return await self.stream(request, body, fitted)
            future = self.batcher.submit(fitted)
        except UserError as error:  # SkillNotFoundError (404) and ContextLengthError (400) included
            return response_for(error)
        try:
            generation = await _wait_or_disconnect(future, request)
        except Exception as error:  # the model's failure for this request only: the batcher isolated it
            return response_for(error)
        if generation is None:
            return Response(status_code=499)  # nobody reads it; nginx's "client closed request"
        return reply(body, generation, fitted.max_new_tokens)

    async def stream(self, request: Request, body: ChatCompletionIn, fitted: ChatRequest) -> Response:
        """Submit `fitted` with a sink into this request's queue; respond once its first piece (or its end) is
        there, so that a request that fails before producing anything still gets its HTTP error status."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:  # from the batcher's thread
            loop.call_soon_threadsafe(pieces.put_nowait, item)

        future = self.batcher.submit(fitted.streaming(put))
        future.add_done_callback(lambda _: put(END))  # after the last piece: the sink runs before the result is set
        first = await _first_or_disconnect(pieces.get(), request)
        if first is None:
            future.cancel()
            return Response(status_code=499)
        if first.result() is END and future.exception() is not None:
            return response_for(future.exception())  # type: ignore[arg-type]
        return streamed(body, future, pieces, first.result(), fitted.max_new_tokens)

    async def models(self, request: Request) -> Response:
        if not self.authorized(request):
            return unauthorized()
        return JSONResponse({"object": "list", "data": self.catalog.listing()})

    async def one_model(self, request: Request) -> Response:
        if not self.authorized(request):
            return unauthorized()
        try:
            return JSONResponse(self.catalog.card(request.path_params["model"]))
        except UserError as error:
            return response_for(error)

    async def health(self, request: Request) -> Response:
        mode = "continuous" if self.batcher.continuous else "flush"
        return JSONResponse({"status": "ok", "mode": mode, "batching": self.batcher.stats.model_dump()})


def create_app(
    model: ChatModel,
    store: SkillStore,
    config: ServeConfig | None = None,
    *,
    max_batch: int = 8,
    max_wait_ms: float = 10.0,
    continuous: bool = False,
) -> Starlette:
    """The ASGI app. `model` is wrapped in a `BatchingChatModel` unless it is one (then the caller closes it).

    `continuous`: requests join the running decode between steps (`agent.backends.continuous`) instead of waiting
    for flushed batches (skills need adapter slots there; measured in README, Serving: not faster here yet).
    """
    config = config or ServeConfig()
    owns_batcher = not isinstance(model, BatchingChatModel)
    batcher = (
        BatchingChatModel(model, max_batch=max_batch, max_wait_ms=max_wait_ms, continuous=continuous)
        if owns_batcher
        else model
    )
    assert isinstance(batcher, BatchingChatModel)
    routes = _Routes(batcher, ModelCatalog(store, max_compositions=config.max_listed_compositions), config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owns_batcher:
                batcher.close()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", routes.chat_completions, methods=["POST"]),
            Route("/v1/models", routes.models, methods=["GET"]),
            Route("/v1/models/{model:path}", routes.one_model, methods=["GET"]),
            Route("/health", routes.health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.catalog = routes.catalog
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
    continuous: bool = False,
    log_level: str = "info",
) -> None:
    """Load the shared base and the store, and serve them until interrupted (what `habitloop serve` runs)."""
    import uvicorn

    app = local_app(settings, config=config, max_batch=max_batch, max_wait_ms=max_wait_ms, continuous=continuous)
    uvicorn.Server(_uvicorn_config(app, host=host, port=port, log_level=log_level)).run()


def local_app(
    settings: Any,
    *,
    config: ServeConfig | None = None,
    max_batch: int = 8,
    max_wait_ms: float = 10.0,
    continuous: bool = False,
) -> Any:
    """The app over this process's base model (`LocalChatModel` on a `Residency`) and the configured store."""
    runtime = local_runtime(settings)
    return create_app(
        runtime.model, runtime.store, config, max_batch=max_batch, max_wait_ms=max_wait_ms, continuous=continuous
    )


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
