"""Generation backends: one conformance suite for every `ChatModel` available, then `habitloop serve` over HTTP.

Backends of the suite: a scripted fake (`ScriptedChatModel` behind a store-checking echo), the same behind
`BatchingChatModel`, the real in-process `LocalChatModel` on the tiny base, the HTTP backend against `habitloop
serve` (on a free loopback port, the tiny local model behind it) and vLLM (skipped unless importable with a GPU).
The server tests use the `openai` package as the client, and raw httpx where a client must misbehave.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.backends import BASE_MODEL, format_model_name, parse_model_name
from agent.backends.batching import BatchingChatModel
from agent.backends.local import LocalChatModel
from agent.backends.openai_http import OpenAIChatModel
from agent.backends.protocol import ChatModel, ChatRequest, Generation
from agent.serve.app import ServeConfig, completion_text, create_app, running_server
from agent.testing import ScriptedChatModel, tiny_base
from skills import Residency, SkillStore
from skills.errors import SkillNotFoundError, UserError

# ------------------------------------------------------------------------------------------------------ fakes


class EchoModel:
    """A scripted backend that checks skills like a real one: replies "<model name> <last message>" in words.

    Unknown skills or revisions raise `SkillNotFoundError` (from the store); `max_new_tokens` bounds the words;
    every batch it is given is recorded as the model names of its rows.
    """

    def __init__(self, store: SkillStore, delay: float = 0.0) -> None:
        self.store = store
        self.delay = delay
        self.scripted = ScriptedChatModel(lambda conversation: str(conversation[-1]["content"]))
        self.batches: list[list[str]] = []

    def generate(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        skills: Sequence[tuple[str, int]] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Generation:
        request = ChatRequest(messages=list(messages), skills=list(skills), max_new_tokens=max_new_tokens)
        return self.generate_batch([request])[0]

    def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        self.batches.append([format_model_name(r.skills) for r in requests])
        time.sleep(self.delay)
        results = []
        for r in requests:
            for name, revision in r.skills:
                self.store.revision(name, revision)  # raises SkillNotFoundError, as loading the adapter would
            reply = self.scripted.generate(r.messages, skills=r.skills)
            words = [format_model_name(r.skills), *reply.text.split()][: r.max_new_tokens]
            results.append(
                Generation(text=" ".join(words), prompt_tokens=reply.prompt_tokens, completion_tokens=len(words))
            )
        return results


@pytest.fixture
def skills_store(store: SkillStore, adapter: Callable[[str], Path]) -> SkillStore:
    """The tiny base's store with two skills, alpha and beta (revision 1 each), trained on different data."""
    store.create("alpha", adapter("alpha"), kind="tool_habit")
    store.create("beta", adapter("beta"), kind="style")
    return store


def _chat(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


# ------------------------------------------------------------------------------------------------------ conformance


@dataclass
class Backend:
    name: str
    model: ChatModel
    thread_safe: bool  # may several threads call it at once (the protocol does not promise it)


def _vllm_available() -> str | None:
    """None when the vLLM backend can run here, else why not."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (make vllm-check runs this suite with vLLM's CPU build)"
    import torch

    from agent.backends.vllm_backend import on_cpu

    if not on_cpu() and not torch.cuda.is_available():
        return "this vllm build needs a CUDA GPU and this machine has none"
    return None


@pytest.fixture(params=["scripted", "batching", "local-tiny", "http", "vllm"])
def backend(request: pytest.FixtureRequest, skills_store: SkillStore) -> Iterator[Backend]:
    kind = request.param
    if kind == "scripted":
        yield Backend(kind, EchoModel(skills_store), thread_safe=False)
    elif kind == "batching":
        with BatchingChatModel(EchoModel(skills_store), max_batch=4, max_wait_ms=5) as batching:
            yield Backend(kind, batching, thread_safe=True)
    elif kind == "local-tiny":
        base = tiny_base()
        yield Backend(kind, LocalChatModel(base, Residency(base.model, skills_store)), thread_safe=False)
    elif kind == "http":
        base = tiny_base()
        app = create_app(LocalChatModel(base, Residency(base.model, skills_store)), skills_store)
        with running_server(app) as url, OpenAIChatModel(url, timeout=60) as client:
            yield Backend(kind, client, thread_safe=True)
    else:
        yield Backend(kind, request.getfixturevalue("vllm_model"), thread_safe=True)


@pytest.fixture(scope="module")
def vllm_model() -> Any:
    """One vLLM engine for the module (an engine takes seconds to start and holds GPU memory until exit).

    vLLM cannot load the tiny in-process base, so on a GPU machine the suite runs it on the configured real base
    and store: `scripts/vllm_check.sh` sets HABITLOOP_HOME and puts random adapters in that store first.
    """
    reason = _vllm_available()
    if reason:
        pytest.skip(reason)
    from agent.backends.vllm_backend import VLLMChatModel

    return VLLMChatModel.from_settings(gpu_memory_utilization=0.3)


def _skills_for(backend: Backend) -> list[list[tuple[str, int]]]:
    if backend.name == "vllm":
        return [[], *[[(m.name, m.current)] for m in backend.model.store.list()[:2]]]  # type: ignore[attr-defined]
    return [[], [("alpha", 1)], [("beta", 1)]]


def test_generate_returns_a_generation(backend: Backend) -> None:
    for skills in _skills_for(backend):
        result = backend.model.generate(_chat("Say hello."), skills=skills, max_new_tokens=8)
        assert isinstance(result, Generation)
        assert isinstance(result.text, str)
        assert result.prompt_tokens > 0 and 0 <= result.completion_tokens <= 8


def test_greedy_is_reproducible(backend: Backend) -> None:
    skills = _skills_for(backend)[1]
    first = backend.model.generate(_chat("Name a colour."), skills=skills, max_new_tokens=6)
    again = backend.model.generate(_chat("Name a colour."), skills=skills, max_new_tokens=6)
    assert first == again


def test_max_new_tokens_bounds_the_reply(backend: Backend) -> None:
    result = backend.model.generate(_chat("Count to one hundred, please, slowly."), max_new_tokens=3)
    assert result.completion_tokens <= 3


def test_a_mixed_batch_keeps_order_and_matches_single_calls(backend: Backend) -> None:
    base, one, two = _skills_for(backend)
    requests = [
        ChatRequest(messages=_chat(text), skills=skills, max_new_tokens=6)
        for text, skills in [("ping", one), ("2+2?", two), ("hello", base), ("colour of the sky?", one)]
    ]
    batch = backend.model.generate_batch(requests)
    singles = [backend.model.generate(r.messages, skills=r.skills, max_new_tokens=r.max_new_tokens) for r in requests]
    assert batch == singles
    assert backend.model.generate_batch([]) == []


def test_unknown_skill_or_revision_is_skill_not_found(backend: Backend) -> None:
    with pytest.raises(SkillNotFoundError):
        backend.model.generate(_chat("hi"), skills=[("no-such-skill", 1)], max_new_tokens=4)
    name = _skills_for(backend)[1][0][0]
    with pytest.raises(SkillNotFoundError):
        backend.model.generate(_chat("hi"), skills=[(name, 999)], max_new_tokens=4)


def test_a_bad_request_in_a_batch_raises(backend: Backend) -> None:
    good = ChatRequest(messages=_chat("hi"), skills=_skills_for(backend)[1], max_new_tokens=4)
    bad = ChatRequest(messages=_chat("hi"), skills=[("no-such-skill", 1)], max_new_tokens=4)
    with pytest.raises(SkillNotFoundError):
        backend.model.generate_batch([good, bad])
    assert backend.model.generate_batch([good])[0].completion_tokens <= 4  # and the backend still works


def test_concurrent_callers_get_their_own_answers(backend: Backend) -> None:
    if not backend.thread_safe:
        pytest.skip(f"{backend.name} is not meant to be called from several threads (wrap it in BatchingChatModel)")
    choices = _skills_for(backend)
    jobs = [(f"question {i}", choices[i % len(choices)]) for i in range(8)]
    expected = [backend.model.generate(_chat(text), skills=skills, max_new_tokens=5) for text, skills in jobs]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda job: backend.model.generate(_chat(job[0]), skills=job[1], max_new_tokens=5), jobs)
        )
    assert answers == expected


# ------------------------------------------------------------------------------------------------------ naming


def test_model_names() -> None:
    assert parse_model_name("base") == []
    assert parse_model_name("tool-habits") == [("tool-habits", None)]
    assert parse_model_name("base+tool-habits@3+alice/preference") == [("tool-habits", 3), ("alice/preference", None)]
    assert format_model_name([]) == BASE_MODEL
    assert format_model_name([("a", 1), ("b", 2)]) == "a@1+b@2"
    assert format_model_name([("a", 1), ("b", 2)], pin=False) == "a+b"
    for bad in ["", "a++b", "A", "a@0", "a@x", "a+a@2", "a/b/c", "../x", "a b", "base+base", "a@1@2"]:
        with pytest.raises(UserError):
            parse_model_name(bad)


_slug = st.from_regex(r"[a-z0-9](?:[a-z0-9_-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda s: s != BASE_MODEL)


@given(
    st.lists(
        st.tuples(st.tuples(st.none() | _slug, _slug), st.none() | st.integers(1, 10**6)),
        max_size=4,
        unique_by=lambda item: item[0],
    )
)
def test_model_names_round_trip(parts: list[tuple[tuple[str | None, str], int | None]]) -> None:
    skills = [(f"{owner}/{name}" if owner else name, revision) for (owner, name), revision in parts]
    assert parse_model_name(format_model_name(skills)) == skills


# ------------------------------------------------------------------------------------------------------ the server


@pytest.fixture
def echo(skills_store: SkillStore) -> EchoModel:
    return EchoModel(skills_store, delay=0.05)


@pytest.fixture
def server(echo: EchoModel, skills_store: SkillStore) -> Iterator[tuple[str, Any]]:
    """`habitloop serve`'s app over the echo model on a free loopback port: (base URL, app)."""
    app = create_app(echo, skills_store, ServeConfig(max_body_bytes=4096), max_batch=8, max_wait_ms=30)
    with running_server(app) as url:
        yield url, app


@pytest.fixture
def client(server: tuple[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0], api_key="unused", max_retries=0, timeout=30)


def test_chat_completion_with_the_openai_client(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "hello there"}], max_tokens=10
    )
    assert reply.choices[0].message.content == "alpha@1 hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "alpha"
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    base = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "hi"}])
    assert base.choices[0].message.content == "base hi"
    pinned = client.chat.completions.create(model="beta@1", messages=[{"role": "user", "content": "x"}])
    assert pinned.choices[0].message.content == "beta@1 x"
    cut = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "a b c d"}], max_tokens=2)
    assert cut.choices[0].finish_reason == "length"


def test_streaming_sends_openai_chunks(client: openai.OpenAI) -> None:
    text = "one two  three, four"
    stream = client.chat.completions.create(
        model="beta",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "beta@1 one two three, four"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_models_lists_base_skills_and_requested_compositions(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["base", "alpha", "beta"]
    reply = client.chat.completions.create(model="alpha+beta", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "alpha@1+beta@1 hi"
    assert [m.id for m in client.models.list()] == ["base", "alpha", "beta", "alpha+beta"]
    assert client.models.retrieve("alpha").id == "alpha"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_concurrent_requests_of_different_skills_share_batches(
    client: openai.OpenAI, echo: EchoModel, server: tuple[str, Any]
) -> None:
    names = ["base", "alpha", "beta", "alpha+beta"]

    def ask(i: int) -> str | None:
        model = names[i % 4]
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"q{i}"}])
        return reply.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    expected_names = ["base", "alpha@1", "beta@1", "alpha@1+beta@1"]
    assert answers == [f"{expected_names[i % 4]} q{i}" for i in range(16)]
    assert len(echo.batches) < 16
    assert any(len(set(batch)) > 1 for batch in echo.batches)  # different skills in one batch
    assert server[1].state.batcher.stats.requests == 16


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server: tuple[str, Any]) -> None:
    url = server[0]
    with httpx.Client(base_url=url, timeout=30) as http:
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
            ({"json": {"model": "alpha"}}, 400, "messages"),
            ({"json": {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "n": 2}}, 400, "n"),
            ({"json": {"model": "alpha", "messages": [{"role": "wizard", "content": "x"}]}}, 400, "role"),
            (
                {"json": {"model": "alpha", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6}},
                400,
                "limit",
            ),
            ({"json": {"model": "nope", "messages": [{"role": "user", "content": "x"}]}}, 404, "nope"),
            ({"json": {"model": "alpha@7", "messages": [{"role": "user", "content": "x"}]}}, 404, "no revision 7"),
            ({"json": {"model": "Not A Name!", "messages": [{"role": "user", "content": "x"}]}}, 404, "Not A Name!"),
            ({"json": {"model": "alice/preference", "messages": [{"role": "user", "content": "x"}]}}, 404, "alice"),
            ({"json": {"model": "alpha", "messages": [{"role": "user", "content": "x" * 5000}]}}, 413, "larger than"),
        ]
        for kwargs, status, words in cases:
            response = http.post("/chat/completions", **kwargs)
            assert response.status_code == status, (kwargs, response.text)
            error = response.json()["error"]
            assert words in error["message"] and error["type"], error
        assert (
            http.post(
                "/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}
            ).json()["error"]["code"]
            == "model_not_found"
        )

        def chunked() -> Iterator[bytes]:  # no Content-Length: the server must count while reading
            yield b'{"model": "alpha", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}]}'

        assert http.post("/chat/completions", content=chunked()).status_code == 413
        assert http.get("/no/such/route").status_code == 404
        ok = http.post("/chat/completions", json={"model": "alpha", "messages": [{"role": "user", "content": "fine"}]})
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "alpha@1 fine"


def test_api_key(echo: EchoModel, skills_store: SkillStore) -> None:
    app = create_app(echo, skills_store, ServeConfig(api_key="s3cret"))
    with running_server(app) as url:
        message = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).chat.completions.create(
                model="base", messages=message
            )
        missing = httpx.post(f"{url}/chat/completions", json={"model": "base", "messages": message})
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model="base", messages=message).choices[0].message.content == "base hi"
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200
        with pytest.raises(UserError, match="401"):
            OpenAIChatModel(url, api_key="wrong").generate(message)
        assert OpenAIChatModel(url, api_key="s3cret").generate(message).text == "base hi"


def test_a_client_that_disconnects_mid_stream(server: tuple[str, Any], client: openai.OpenAI) -> None:
    url, app = server
    long_text = " ".join(f"w{i}" for i in range(3000))
    body = {"model": "alpha", "messages": [{"role": "user", "content": "go"}], "stream": True, "max_tokens": 2000}
    body["messages"][0]["content"] = long_text[:3500]  # under the 4 kB body limit, ~600 words: many chunks
    with httpx.Client(timeout=30) as http, http.stream("POST", f"{url}/chat/completions", json=body) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    # closed after one event; the server must keep serving everyone else
    reply = client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "still there?"}])
    assert reply.choices[0].message.content == "beta@1 still there?"


def test_a_client_that_gives_up_while_queued_is_dropped(skills_store: SkillStore) -> None:
    slow = EchoModel(skills_store, delay=0.6)
    app = create_app(slow, skills_store, max_batch=1, max_wait_ms=0)
    with running_server(app) as url:
        message = {"model": "alpha", "messages": [{"role": "user", "content": "x"}]}
        busy = threading.Thread(target=lambda: httpx.post(f"{url}/chat/completions", json=message, timeout=30))
        busy.start()
        time.sleep(0.15)  # the worker is generating `busy`'s reply
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/chat/completions", json={**message, "model": "beta"}, timeout=0.2)
        busy.join()
        time.sleep(0.3)
        assert app.state.batcher.stats.cancelled == 1
        assert [batch for batch in slow.batches] == [["alpha@1"]]  # beta was never generated
        assert httpx.post(f"{url}/chat/completions", json=message, timeout=30).status_code == 200


def test_a_skill_deleted_while_in_use(skills_store: SkillStore) -> None:
    """The real local model behind the server: alpha is deleted while requests for it and for beta are in flight."""
    base = tiny_base()
    app = create_app(LocalChatModel(base, Residency(base.model, skills_store)), skills_store, max_wait_ms=5)
    statuses: dict[str, list[int]] = {"alpha": [], "beta": []}
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as http:

        def ask(model: str) -> None:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            statuses[model].append(http.post("/chat/completions", json=body).status_code)

        ask("alpha")  # alpha is hot in the model
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(ask, name) for name in ["alpha", "beta"] * 6]
            time.sleep(0.05)
            skills_store.delete("alpha")
            for f in futures:
                f.result()
        ask("alpha")
        ask("beta")
        assert set(statuses["alpha"]) <= {200, 404} and statuses["alpha"][0] == 200 and statuses["alpha"][-1] == 404
        assert set(statuses["beta"]) == {200}
        assert [m["id"] for m in http.get("/models").json()["data"]] == ["base", "beta"]
        error = http.post("/chat/completions", json={"model": "alpha", "messages": [{"role": "user", "content": "x"}]})
        assert "alpha" in error.json()["error"]["message"]


def test_the_agent_loop_over_http(tmp_path: Path, skills_store: SkillStore) -> None:
    """Agent here, generation behind `habitloop serve`: a tool call, its result, the answer, the skill pinned."""
    from langgraph.checkpoint.memory import InMemorySaver

    from agent import Agent, Settings
    from memory import HashingEmbedder, InMemoryBuffer
    from tools import builtin_tools

    def reply(conversation: list[dict[str, Any]]) -> str:
        if conversation[-1]["role"] == "tool":
            return "17*23 is 391."
        return '<tool_call>{"name": "calculator", "arguments": {"expression": "17*23"}}</tool_call>'

    scripted = ScriptedChatModel(reply)
    with running_server(create_app(scripted, skills_store)) as url, OpenAIChatModel(url) as remote:
        agent = Agent(
            settings=Settings(home=tmp_path / "home"),
            model=remote,
            store=skills_store,
            tools=builtin_tools(),
            checkpointer=InMemorySaver(),
            buffer=InMemoryBuffer(HashingEmbedder()),
            retrieval_k=0,
        )
        result = agent.run("What is 17*23?", skills=["alpha"])
    assert result.answer == "17*23 is 391."
    assert [step.kind for step in result.steps] == ["model", "tool_call", "tool_result", "model", "final"]
    assert scripted.skills_seen == [[("alpha", 1)], [("alpha", 1)]]
    assert scripted.calls[1][-1]["role"] == "tool" and "391" in scripted.calls[1][-1]["content"]


def test_vllm_missing_is_a_user_error(monkeypatch: pytest.MonkeyPatch, skills_store: SkillStore) -> None:
    import sys

    from agent.backends.vllm_backend import VLLMChatModel

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed, even where it is
    with pytest.raises(UserError, match="vllm") as caught:
        VLLMChatModel("/nonexistent", skills_store)
    assert caught.value.hint and "habitloop[vllm]" in caught.value.hint


def test_completion_text_joins_sse_deltas() -> None:
    lines = [
        "data: " + json.dumps({"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
        "data: " + json.dumps({"choices": [{"delta": {"content": "a "}}]}),
        "data: " + json.dumps({"choices": [{"delta": {"content": "b"}}]}),
        "data: [DONE]",
    ]
    assert completion_text(lines) == "a b"
