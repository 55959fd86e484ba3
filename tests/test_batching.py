"""BatchingChatModel: concurrent callers share batches, failures stay with their request, close never hangs."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent.backends.batching import BatchingChatModel
from agent.backends.protocol import ChatRequest, Generation
from agent.testing import ScriptedChatModel
from skills.errors import SkillNotFoundError, UserError


class RecordingModel:
    """A fake inner model: echoes each request's last message and skills, records every batch it was given.

    A request whose skills include "bad" makes the whole batch raise, as a real model does when one row cannot load.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[ChatRequest]] = []
        self.delay = delay
        self.threads: set[str] = set()

    def generate(self, messages, *, skills=(), max_new_tokens=256, temperature=0.0):  # type: ignore[no-untyped-def]
        return self.generate_batch([ChatRequest(messages=list(messages), skills=list(skills))])[0]

    def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(requests))
        time.sleep(self.delay)
        if any(name == "bad" for r in requests for name, _ in r.skills):
            raise SkillNotFoundError("no skill named 'bad'")
        return [Generation(text=f"{r.messages[-1]['content']}|{r.skills}") for r in requests]


def _ask(model: BatchingChatModel, i: int, skill: str | None = None) -> str:
    skills = [(skill or f"s{i % 3}", 1)]
    return model.generate([{"role": "user", "content": f"q{i}"}], skills=skills).text


def test_concurrent_callers_share_batches_and_get_their_own_answers() -> None:
    inner = RecordingModel(delay=0.02)
    with BatchingChatModel(inner, max_batch=8, max_wait_ms=50) as model:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: _ask(model, i), range(16)))
    assert answers == [f"q{i}|[('s{i % 3}', 1)]" for i in range(16)]
    sizes = [len(b) for b in inner.batches]
    assert sum(sizes) == 16
    assert len(sizes) < 16 and max(sizes) <= 8
    assert any(len({r.skills[0][0] for r in b}) > 1 for b in inner.batches)  # mixed-skill batches happen
    assert inner.threads == {"habitloop-batching"}  # only the worker touches the inner model
    assert model.stats.requests == 16 and model.stats.batches == len(sizes)


def test_a_bad_request_fails_alone() -> None:
    inner = RecordingModel(delay=0.02)
    with BatchingChatModel(inner, max_batch=8, max_wait_ms=100) as model:
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(_ask, model, i, "bad" if i == 3 else None) for i in range(6)]
            outcomes = [f.exception() or f.result() for f in futures]
    assert isinstance(outcomes[3], SkillNotFoundError)
    assert [o for i, o in enumerate(outcomes) if i != 3] == [f"q{i}|[('s{i % 3}', 1)]" for i in range(6) if i != 3]
    assert model.stats.failed_batches >= 1  # the joint batch failed and was split
    assert max(len(b) for b in inner.batches) > 1


def test_generate_batch_keeps_order_and_raises_the_failure() -> None:
    with BatchingChatModel(RecordingModel(), max_batch=3, max_wait_ms=5) as model:
        requests = [ChatRequest(messages=[{"role": "user", "content": f"m{i}"}], skills=[("x", i)]) for i in range(7)]
        assert [g.text for g in model.generate_batch(requests)] == [f"m{i}|[('x', {i})]" for i in range(7)]
        assert model.generate_batch([]) == []
        with pytest.raises(SkillNotFoundError):
            model.generate_batch(
                [requests[0], ChatRequest(messages=[{"role": "user", "content": "?"}], skills=[("bad", 1)])]
            )


def test_max_batch_one_never_batches() -> None:
    inner = RecordingModel(delay=0.01)
    with BatchingChatModel(inner, max_batch=1, max_wait_ms=50) as model, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: _ask(model, i), range(4)))
    assert [len(b) for b in inner.batches] == [1, 1, 1, 1]


def test_close_finishes_queued_requests_and_then_refuses() -> None:
    inner = RecordingModel(delay=0.05)
    model = BatchingChatModel(inner, max_batch=2, max_wait_ms=1)
    futures = [model.submit(ChatRequest(messages=[{"role": "user", "content": f"c{i}"}])) for i in range(5)]
    started = time.monotonic()
    model.close()
    assert time.monotonic() - started < 5
    assert [f.result(timeout=1).text for f in futures] == [f"c{i}|[]" for i in range(5)]
    with pytest.raises(UserError, match="closed"):
        model.generate([{"role": "user", "content": "late"}])
    model.close()  # twice is fine


def test_close_while_callers_wait_does_not_deadlock() -> None:
    model = BatchingChatModel(RecordingModel(delay=0.01), max_batch=4, max_wait_ms=1)
    results: list[object] = []

    def caller(i: int) -> None:
        try:
            results.append(_ask(model, i))
        except UserError as error:  # submitted after close: refused, not hung
            results.append(error)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    model.close(timeout=10)
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert len(results) == 12


def test_a_cancelled_request_is_dropped() -> None:
    inner = RecordingModel(delay=0.1)
    with BatchingChatModel(inner, max_batch=1, max_wait_ms=0) as model:
        first = model.submit(ChatRequest(messages=[{"role": "user", "content": "first"}]))
        second = model.submit(ChatRequest(messages=[{"role": "user", "content": "second"}]))
        time.sleep(0.02)  # the worker is busy with `first`
        assert second.cancel()
        assert first.result().text == "first|[]"
    assert [b[0].messages[-1]["content"] for b in inner.batches] == ["first"]
    assert model.stats.cancelled == 1


def test_wraps_any_chat_model() -> None:
    scripted = ScriptedChatModel(lambda conversation: conversation[-1]["content"].upper())
    with BatchingChatModel(scripted) as model:
        assert model.generate([{"role": "user", "content": "hi"}], skills=[("a", 2)]).text == "HI"
    assert scripted.skills_seen == [[("a", 2)]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UserError):
        BatchingChatModel(RecordingModel(), max_batch=0)
    with pytest.raises(UserError):
        BatchingChatModel(RecordingModel(), max_wait_ms=-1)
