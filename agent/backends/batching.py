"""`BatchingChatModel`: many threads call `generate`, one worker feeds the inner model mixed-skill batches.

A local model is not safe to call from several threads, and calling it once per request wastes its batch dimension
(DESIGN.md: 8 rows cost about the time of 2). This wrapper queues concurrent requests and flushes them together to
the inner model's `generate_batch`: a flush happens when `max_batch` requests are waiting or `max_wait_ms` after the
first of them arrived, whichever is sooner. Requests with different skills land in the same batch; whether that
batch runs as one forward pass is the inner model's business (`LocalChatModel` with peft `adapter_names`).

With `continuous=True` and an inner model that offers `continuous_decoder` (`LocalChatModel`), there are no flushes:
the worker runs a `ContinuousDecoder` (`agent.backends.continuous`), and a queued request joins the running decode
between two steps as soon as a row is free, and is answered as soon as its own reply ends. A request the decoder
cannot take (skills the adapter slots do not serve) is answered alone the flushed way, while the running rows wait.

Failure stays with the request that caused it: when a batch fails, each of its requests is retried alone, so one
bad request (an unknown skill, a skill deleted meanwhile) fails only its own caller. Only the worker thread ever
touches the inner model. `submit` returns a `concurrent.futures.Future`; cancelling it before its batch starts
drops the request (the HTTP server does that when a client disconnects while waiting).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, cast

from pydantic import BaseModel

from agent.backends.protocol import ChatModel, ChatRequest, Generation, Message, fit_request
from skills.errors import OperatorError, UserError

log = logging.getLogger(__name__)

_STOP = object()  # queued by close(): the worker drains what came before it, then exits


class BatchingStats(BaseModel):
    """What the worker did, for benchmarks and tests (read it; do not write it)."""

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed_batches: int = 0  # batches that raised and were retried one request at a time
    cancelled: int = 0  # requests dropped before their batch started (their caller gave up)
    joined: int = 0  # continuous: requests that joined a running decode
    decode_steps: int = 0  # continuous: decode steps run (one token for every running row)


class BatchingChatModel:
    """A thread-safe `ChatModel` that batches concurrent requests into the inner model's `generate_batch`.

    Use it as a context manager, or call `close()`: it waits for queued requests to finish, then stops the worker.
    Requests after `close()` raise `UserError`.
    """

    def __init__(
        self, model: ChatModel, *, max_batch: int = 8, max_wait_ms: float = 10.0, continuous: bool = False
    ) -> None:
        if max_batch < 1:
            raise UserError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait_ms < 0:
            raise UserError(f"max_wait_ms must not be negative, not {max_wait_ms}")
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchingStats()
        self._queue: queue.Queue[object] = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()  # makes "not closed, then enqueue" atomic against close()
        make_decoder = getattr(model, "continuous_decoder", None) if continuous else None
        self.continuous = make_decoder is not None
        run = self._run if make_decoder is None else lambda: self._run_continuous(make_decoder(max_batch))
        self._worker = threading.Thread(target=run, name="habitloop-batching", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------------------------------------ ChatModel

    def fit(self, request: ChatRequest, *, strict: bool = False) -> ChatRequest:
        """The inner model's `fit` (`protocol.fit_request`): `request` cut to its context, or `ContextLengthError`.

        Runs in the caller's thread. The server calls it with `strict` for an explicit `max_tokens`.
        """
        return fit_request(self.model, request, strict=strict)

    def submit(self, request: ChatRequest) -> Future[Generation]:
        """Queue one request; the future resolves to its `Generation` or to the exception it caused.

        A request that cannot fit the inner model's context raises `ContextLengthError` here, before it is queued:
        it never waits for a batch nor fails one. What is queued is the request as fitted (`fit`).
        """
        request = self.fit(request)
        future: Future[Generation] = Future()
        with self._close_lock:
            if self._closed:
                raise UserError("this BatchingChatModel is closed", hint="create a new one")
            self._queue.put((request, future))
        return future

    def generate(
        self,
        messages: Sequence[Message],
        *,
        skills: Sequence[tuple[str, int]] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Generation:
        request = ChatRequest(
            messages=list(messages), skills=list(skills), max_new_tokens=max_new_tokens, temperature=temperature
        )
        return self.submit(request).result()

    def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        """Queue every request (they may share batches with other callers'), wait for all, keep the order.

        Raises the first failing request's exception, after all of them have finished.
        """
        futures = [self.submit(request) for request in requests]
        return [future.result() for future in futures]

    # ------------------------------------------------------------------------------------------------ lifecycle

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued requests, then stop the worker. Safe to call twice."""
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> BatchingChatModel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ the worker

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True  # everything queued before close() is in this batch or was run already
                    break
                batch.append(item)
            self._flush(batch)  # type: ignore[arg-type]

    def _run_continuous(self, decoder: Any) -> None:
        """Admit what is queued while rows are free (block for it when idle), then one decode step; until close()."""
        stopping = False
        while True:
            joiners: list[tuple[ChatRequest, Future[Generation]]] = []
            while not stopping and len(joiners) < decoder.free:
                try:
                    item = self._queue.get() if decoder.active == 0 and not joiners else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True  # everything queued before it has been admitted
                    break
                request, future = cast(tuple[ChatRequest, Future[Generation]], item)
                if future.set_running_or_notify_cancel():
                    joiners.append((request, future))
                else:
                    self.stats.cancelled += 1
            if joiners:
                self._admit(decoder, joiners)
            if decoder.active:
                self.stats.decode_steps += 1
                try:
                    decoder.step()
                except BaseException as error:  # noqa: B036 - its rows were answered with it; keep serving
                    log.info("a decode step failed (%s); its rows got the error", error)
            elif stopping:
                return

    def _admit(self, decoder: Any, joiners: list[tuple[ChatRequest, Future[Generation]]]) -> None:
        """Join `joiners` to the running decode; those it cannot serve are answered alone, the flushed way."""

        def answering(future: Future[Generation]) -> Callable[[Generation | BaseException], None]:
            def answer(result: Generation | BaseException) -> None:
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

            return answer

        self.stats.requests += len(joiners)
        refused = decoder.join([(request, answering(future)) for request, future in joiners])
        self.stats.joined += len(joiners) - len(refused)
        self.stats.largest_batch = max(self.stats.largest_batch, decoder.active)
        for request, answer in refused:
            self.stats.batches += 1
            try:
                answer(self._call([request])[0])
            except BaseException as error:  # noqa: B036 - the request's own failure, for its caller only
                answer(error)

    def _flush(self, items: list[tuple[ChatRequest, Future[Generation]]]) -> None:
        # A caller that cancelled its future before now gave up: drop its request (nobody would read the answer).
        live = [(request, future) for request, future in items if future.set_running_or_notify_cancel()]
        self.stats.cancelled += len(items) - len(live)
        if not live:
            return
        self.stats.requests += len(live)
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        try:
            results = self._call([request for request, _ in live])
        except BaseException as error:  # noqa: B036 - every failure must reach a caller, or it waits forever
            if len(live) == 1:
                live[0][1].set_exception(error)
                return
            self.stats.failed_batches += 1
            log.info("batch of %d failed (%s); retrying its requests one by one", len(live), error)
            for request, future in live:
                try:
                    future.set_result(self._call([request])[0])
                except BaseException as single:  # noqa: B036 - as above
                    future.set_exception(single)
            return
        for (_, future), result in zip(live, results, strict=True):
            future.set_result(result)

    def _call(self, requests: list[ChatRequest]) -> list[Generation]:
        results = list(self.model.generate_batch(requests))
        if len(results) != len(requests):
            raise OperatorError(
                f"{type(self.model).__name__}.generate_batch returned {len(results)} results for {len(requests)}",
                hint="the inner model breaks the ChatModel protocol: one Generation per request, in order",
            )
        return results
