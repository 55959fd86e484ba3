"""`habitloop serve` and the local model against hostile or careless input.

- the context window: a conversation longer than the base's context is refused by the model itself (Python API and
  batcher: `ContextLengthError`; over HTTP: 400 `context_length_exceeded`), and the completion is capped to what the
  context leaves (an explicit `max_tokens` that cannot fit is refused, as OpenAI does);
- bodies that break parsing (deep nesting, lone surrogates, invalid UTF-8, NaN, huge numbers): 400s in OpenAI's shape;
- slow clients (half a request line, half the headers, half the body): closed after `read_timeout`;
- a base whose tokenizer has no chat template: one line with the fix, not a traceback.

The tiny base has an 8192-token context (as SmolLM2) and a byte-level tokenizer, so one ASCII character is one token.
"""

from __future__ import annotations

import json
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from agent.backends.batching import BatchingChatModel
from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatRequest
from agent.errors import ContextLengthError
from agent.serve.app import ServeConfig, create_app, running_server
from agent.testing import ScriptedChatModel, tiny_base
from skills import Residency, SkillStore, UserError

CONTEXT = 8192  # the tiny base's max_position_embeddings (as SmolLM2's)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def local(fresh_base: Any, store: SkillStore) -> LocalChatModel:
    return LocalChatModel(fresh_base, Residency(fresh_base.model, store))


# --------------------------------------------------------------------------------------------- the context window


def test_the_local_model_knows_its_context(local: LocalChatModel) -> None:
    assert local.context_length == CONTEXT


def test_a_prompt_longer_than_the_context_is_refused_before_it_runs(local: LocalChatModel) -> None:
    too_long = chat("x" * (CONTEXT + 50))
    with pytest.raises(ContextLengthError, match=str(CONTEXT)) as raised:
        local.generate(too_long, max_new_tokens=1)
    assert isinstance(raised.value, UserError) and raised.value.hint
    with pytest.raises(ContextLengthError):
        local.generate_batch([ChatRequest(messages=chat("hi"), max_new_tokens=2), ChatRequest(messages=too_long)])
    with BatchingChatModel(local, max_wait_ms=0) as batcher:
        with pytest.raises(ContextLengthError):
            batcher.generate(too_long, max_new_tokens=1)
        assert batcher.stats.requests == 0  # refused when asked, not after waiting for a batch
        assert batcher.generate(chat("hi"), max_new_tokens=2).completion_tokens <= 2


def test_the_completion_is_capped_to_what_the_context_leaves(local: LocalChatModel) -> None:
    long = chat("y" * (CONTEXT - 60))
    fitted = local.fit(ChatRequest(messages=long, max_new_tokens=256))
    left = fitted.max_new_tokens
    assert 0 < left < 60
    reply = local.generate(long, max_new_tokens=256)
    assert reply.prompt_tokens + left == CONTEXT
    assert reply.prompt_tokens + reply.completion_tokens <= CONTEXT
    [batched] = local.generate_batch([ChatRequest(messages=long, max_new_tokens=256)])
    assert batched.prompt_tokens + batched.completion_tokens <= CONTEXT
    with pytest.raises(ContextLengthError, match="completion"):  # OpenAI's rule for an explicit max_tokens
        local.fit(ChatRequest(messages=long, max_new_tokens=256), strict=True)
    assert local.fit(ChatRequest(messages=chat("hi"), max_new_tokens=8), strict=True).max_new_tokens == 8


def test_a_fitted_request_is_not_tokenized_again(local: LocalChatModel) -> None:
    """The server fits, the batcher fits at submit, generate_batch fits: the prompt is counted once, not three times."""
    before = local.stats.tokenizations
    fitted = local.fit(ChatRequest(messages=chat("y" * (CONTEXT - 60)), max_new_tokens=256))
    again = local.fit(fitted)
    assert local.stats.tokenizations == before + 1
    assert fitted.counted_prompt_tokens is not None and again.counted_prompt_tokens == fitted.counted_prompt_tokens
    assert again.max_new_tokens == fitted.max_new_tokens < 60
    local.fit(ChatRequest(messages=chat("hi"), max_new_tokens=8))  # a new request is counted
    assert local.stats.tokenizations == before + 2


def test_the_server_refuses_what_does_not_fit_with_openais_code(local: LocalChatModel, store: SkillStore) -> None:
    with running_server(create_app(local, store, max_wait_ms=1)) as url, httpx.Client(base_url=url, timeout=60) as http:
        too_long = http.post("/chat/completions", json={"model": "base", "messages": chat("x" * (CONTEXT + 50))})
        assert too_long.status_code == 400, too_long.text
        error = too_long.json()["error"]
        assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
        assert error["param"] == "messages" and str(CONTEXT) in error["message"]
        body = {"model": "base", "messages": chat("y" * (CONTEXT - 60))}
        explicit = http.post("/chat/completions", json={**body, "max_tokens": 200})
        assert explicit.status_code == 400 and explicit.json()["error"]["code"] == "context_length_exceeded"
        capped = http.post("/chat/completions", json=body)  # no max_tokens: the completion gets what is left
        assert capped.status_code == 200, capped.text
        usage = capped.json()["usage"]
        assert usage["total_tokens"] <= CONTEXT
        if usage["total_tokens"] == CONTEXT:
            assert capped.json()["choices"][0]["finish_reason"] == "length"
        short = http.post("/chat/completions", json={"model": "base", "messages": chat("hi"), "max_tokens": 2})
        assert short.status_code == 200


# ------------------------------------------------------------------------------------------- bodies that break parsing


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server over a scripted model that answers with the last message (so replies carry the input back)."""
    store = SkillStore(tmp_path_factory.mktemp("skills"), base_fingerprint="sha256:none")
    model = ScriptedChatModel(lambda conversation: str(conversation[-1]["content"]))
    with running_server(create_app(model, store, max_wait_ms=1)) as url:
        yield url


def _post(url: str, raw: bytes) -> httpx.Response:
    return httpx.post(f"{url}/chat/completions", content=raw, headers={"content-type": "application/json"}, timeout=30)


def _assert_openai_400(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and isinstance(error["message"], str)
    assert len(error["message"]) <= 2000
    return error


GOOD = b'{"model": "base", "messages": [{"role": "user", "content": "hi"}]'
HOSTILE_BODIES = {
    "400k [": b"[" * 400_000,
    "deep nesting in a field": GOOD + b', "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "deep nesting in content": GOOD[:-1].replace(b'"hi"', b"[" * 5000 + b"]" * 5000) + b"}",
    "lone surrogate in content": GOOD.replace(b'"hi"', b'"\\ud800"') + b"}",
    "lone low surrogate in content": GOOD.replace(b'"hi"', b'"a\\udfffb"') + b"}",
    "lone surrogate in the model": GOOD.replace(b'"base"', b'"\\ud83d"') + b"}",
    "lone surrogate in a content part": GOOD.replace(b'"hi"', b'[{"type": "text", "text": "\\udc00"}]') + b"}",
    "invalid utf-8": GOOD.replace(b"hi", b"\xff\xfe\xc3") + b"}",
    "overlong utf-8": GOOD.replace(b"hi", b"\xc0\xaf") + b"}",
    "utf-16": (GOOD + b"}").decode().encode("utf-16"),
    "NaN temperature": GOOD + b', "temperature": NaN}',
    "Infinity temperature": GOOD + b', "temperature": Infinity}',
    "5000-digit max_tokens": GOOD + b', "max_tokens": ' + b"9" * 5000 + b"}",
    "1e999 max_tokens": GOOD + b', "max_tokens": 1e999}',
    "-1 max_tokens": GOOD + b', "max_tokens": -1}',
    "empty body": b"",
    "a bare string": b'"hello"',
    "null": b"null",
    "an array": b"[]",
    "trailing garbage": GOOD + b"} {}",
    "truncated": GOOD,
    "a NUL byte outside strings": GOOD + b"\x00}",
    "messages not a list": b'{"model": "base", "messages": "hi"}',
    "content a number": GOOD.replace(b'"hi"', b"12") + b"}",
    "model a list": GOOD.replace(b'"base"', b"[1]") + b"}",
}


@pytest.mark.parametrize("name", HOSTILE_BODIES)
def test_bodies_that_break_parsing_get_openai_400s(echo_server: str, name: str) -> None:
    _assert_openai_400(_post(echo_server, HOSTILE_BODIES[name]))
    assert _post(echo_server, GOOD + b"}").json()["choices"][0]["message"]["content"] == "hi"  # still serving


def test_valid_unicode_is_answered(echo_server: str) -> None:
    text = "émoji 😀 \u0000 nul, \u202e rtl, \ufeff bom"
    reply = _post(echo_server, json.dumps({"model": "base", "messages": chat(text)}).encode())
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(codec=None)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@hypothesis_settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "model": st.sampled_from(["base", "nope"]) | JSON_VALUES,
            "messages": st.lists(
                st.fixed_dictionaries(
                    {}, optional={"role": st.sampled_from(["user", "wizard"]), "content": JSON_VALUES}
                )
                | JSON_VALUES,
                max_size=3,
            )
            | JSON_VALUES,
            "max_tokens": JSON_VALUES,
            "temperature": JSON_VALUES,
            "stream": JSON_VALUES,
        },
    )
)
def test_any_json_body_gets_an_answer_or_a_4xx_never_a_500(echo_server: str, payload: dict[str, Any]) -> None:
    # ensure_ascii: lone surrogates that hypothesis draws travel as \\udXXX escapes, as a hostile client sends them
    response = _post(echo_server, json.dumps(payload, ensure_ascii=True, allow_nan=True).encode())
    assert response.status_code in (200, 400, 404), response.text[:300]
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@hypothesis_settings(max_examples=100)
@given(st.binary(max_size=300))
def test_any_bytes_get_an_answer_or_a_4xx_never_a_500(echo_server: str, raw: bytes) -> None:
    response = _post(echo_server, raw)
    assert response.status_code in (200, 400, 404), response.text[:300]


# --------------------------------------------------------------------------------------------- slow clients


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The echo server with a one-second read timeout: (host, port)."""
    store = SkillStore(tmp_path_factory.mktemp("skills"), base_fingerprint="sha256:none")
    model = ScriptedChatModel(lambda conversation: "ok")
    app = create_app(model, store, ServeConfig(read_timeout=1.0), max_wait_ms=1)
    with running_server(app) as url:
        address = httpx.URL(url)
        assert address.port is not None
        yield address.host, address.port


REQUEST = b'{"model": "base", "messages": [{"role": "user", "content": "hi"}]}'
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
SLOW_CLIENTS = {
    "nothing at all": b"",
    "half a request line": b"POST /v1/chat/comp",
    "a request line only": b"POST /v1/chat/completions HTTP/1.1\r\n",
    "half the headers": HEAD + b"Content-Le",
    "all headers, half the body": HEAD + b"Content-Length: %d\r\n\r\n" % len(REQUEST) + REQUEST[:20],
}


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection (EOF or reset) before `seconds` pass; what it sends is ignored."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


@pytest.mark.parametrize("name", SLOW_CLIENTS)
def test_a_slow_client_is_disconnected_after_the_read_timeout(impatient_server: tuple[str, int], name: str) -> None:
    with socket.create_connection(impatient_server, timeout=10) as sock:
        sock.sendall(SLOW_CLIENTS[name])
        assert _closed_within(sock, 10.0), f"{name}: the connection is still open after 10 s"
    host, port = impatient_server
    ok = httpx.post(f"http://{host}:{port}/v1/chat/completions", content=REQUEST, timeout=10)
    assert ok.status_code == 200


def _request_ok(sock: socket.socket) -> None:
    """Send one whole request on a kept-alive connection and read its 200 answer."""
    sock.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(REQUEST) + REQUEST)
    reply = b""
    while b'"ok"' not in reply:
        chunk = sock.recv(4096)
        assert chunk, reply
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")


def test_a_kept_alive_connection_that_stalls_in_its_next_request_is_closed(
    impatient_server: tuple[str, int],
) -> None:
    with socket.create_connection(impatient_server, timeout=10) as sock:
        _request_ok(sock)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHo")  # the next request stalls in its headers
        assert _closed_within(sock, 10.0)


def test_a_prompt_client_is_not_cut_off_by_the_read_timeout(impatient_server: tuple[str, int]) -> None:
    """The timeout bounds receiving a request, not answering it, nor the idle time between requests."""
    with socket.create_connection(impatient_server, timeout=10) as sock:
        for _ in range(3):
            _request_ok(sock)
            time.sleep(0.6)  # idle between requests for longer than half the timeout, twice in a row


def test_the_read_timeout_is_a_serve_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    assert ServeConfig().read_timeout == 10.0
    with pytest.raises(ValueError):
        ServeConfig(read_timeout=0)
    seen: list[ServeConfig] = []
    monkeypatch.setattr("agent.serve.app.serve_local", lambda settings, *, config, **kwargs: seen.append(config))
    result = CliRunner().invoke(app, ["serve", "--read-timeout", "2.5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen[0].read_timeout == 2.5


# --------------------------------------------------------------------------------------------- no chat template


def _bfcl_wheel(path: Path) -> Path:
    """The smallest wheel with bfcl-eval's layout: four simple_python cases (`--split all` takes any)."""
    rows = []
    for i in range(4):
        question = {
            "id": f"simple_python_{i}",
            "question": [[{"role": "user", "content": "Area of a circle of radius 2?"}]],
            "function": [
                {
                    "name": "area",
                    "description": "Area of a circle.",
                    "parameters": {"type": "dict", "properties": {"r": {"type": "float"}}, "required": ["r"]},
                }
            ],
        }
        rows.append((question, {"id": question["id"], "ground_truth": [{"area": {"r": [2.0]}}]}))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bfcl_eval/data/BFCL_v4_simple_python.json", "".join(json.dumps(q) + "\n" for q, _ in rows))
        archive.writestr(
            "bfcl_eval/data/possible_answer/BFCL_v4_simple_python.json",
            "".join(json.dumps(a) + "\n" for _, a in rows),
        )
    return path


@pytest.fixture
def templateless_base(tmp_path: Path) -> Path:
    """The tiny base saved as a model folder whose tokenizer has no chat template (like a pretrained-only GGUF)."""
    base = tiny_base()
    folder = tmp_path / "pretrained-only"
    base.model.save_pretrained(folder)
    base.tokenizer.chat_template = None
    base.tokenizer.save_pretrained(folder)
    for leftover in folder.glob("chat_template*"):
        leftover.unlink()
    return folder


def test_a_base_without_a_chat_template_is_one_line_with_the_fix(
    templateless_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent import cli
    from agent.evals.bfcl.data import WHEEL_ENV

    monkeypatch.setenv("HABITLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HABITLOOP_BASE", str(templateless_base))
    monkeypatch.setenv(WHEEL_ENV, str(_bfcl_wheel(tmp_path / "bfcl_eval-2026.3.23-py3-none-any.whl")))
    monkeypatch.setattr("sys.argv", ["habitloop", "eval", "bfcl", "--split", "all", "--limit", "1"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no chat template" in err, err
    assert err.count("error:") == 1 and err.count("fix:") == 1, err  # one error and its fix (rich wraps them)


def test_the_fix_the_hint_names_works(templateless_base: Path, tmp_path: Path) -> None:
    from agent.base import load_base
    from agent.config import Settings
    from agent.testing import CHATML_TEMPLATE

    settings = Settings(home=tmp_path / "home")
    with pytest.raises(UserError, match="chat template") as raised:
        load_base(str(templateless_base), settings=settings)
    assert raised.value.hint and "chat_template.jinja" in raised.value.hint
    (templateless_base / "chat_template.jinja").write_text(CHATML_TEMPLATE)
    base = load_base(str(templateless_base), settings=settings)
    assert base.tokenizer.chat_template == CHATML_TEMPLATE
