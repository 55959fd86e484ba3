"""Token streaming: the pieces a request's sink receives while its batch decodes, and the server's SSE built on it."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatRequest, Generation
from agent.backends.streaming import RowStreamer, unstreamed
from agent.serve.app import create_app, running_server
from agent.serve.wire import completion_text
from agent.testing import random_adapter, tiny_base, tiny_tokenizer
from skills import Residency, SkillStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKENIZER = tiny_tokenizer()


def stream_tokens(ids: Sequence[int], budget: int = 10_000) -> list[str]:
    """The pieces one row's sink receives when `ids` arrive one decode step at a time."""
    pieces: list[str] = []
    streamer = RowStreamer(TOKENIZER, [pieces.append], [budget])
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt comes first; it is not the reply
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    return pieces


def final_text(ids: Sequence[int]) -> str:
    """What the local backend answers for these completion ids (`Generation.text`)."""
    return str(TOKENIZER.decode(list(ids), skip_special_tokens=True)).strip()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufffd"), max_size=60))
def test_the_pieces_of_any_text_join_up_to_its_final_text(text: str) -> None:
    ids = TOKENIZER.encode(text, add_special_tokens=False)  # bytes: multi-byte characters span several tokens
    pieces = stream_tokens(ids)
    assert "".join(pieces) == final_text(ids)
    assert all(pieces) and "\ufffd" not in "".join(pieces)  # no half character, no empty event


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(TOKENIZER) - 1), max_size=40))
def test_any_token_ids_stream_a_prefix_of_the_final_text(ids: list[int]) -> None:
    """Random bytes (broken UTF-8, special tokens): what was sent is never taken back."""
    stops = {TOKENIZER.eos_token_id, TOKENIZER.pad_token_id}
    reply = ids[: next((i for i, t in enumerate(ids) if t in stops), len(ids))]
    streamed = "".join(stream_tokens(ids))
    final = final_text(reply)
    assert final.startswith(streamed)
    assert streamed + unstreamed(final, streamed) == final


def test_rows_stop_at_their_own_end_and_budget() -> None:
    a, b, c = ([] for _ in range(3))  # type: ignore[var-annotated]
    streamer = RowStreamer(TOKENIZER, [a.append, b.append, None, c.append], [3, 10, 10, 10])
    streamer.put(torch.zeros((4, 2), dtype=torch.long))
    word = TOKENIZER.encode("wxyz", add_special_tokens=False)
    eos = TOKENIZER.eos_token_id
    for step, token in enumerate(word):
        row_b = eos if step == 2 else token  # row b ends after two tokens; what follows is padding
        streamer.put(torch.tensor([token, row_b, token, token]))
    assert "".join(a) == "wxy"  # its budget is 3 tokens
    assert "".join(b) == "wx"
    assert "".join(c) == "wxyz"


def test_a_failing_sink_stops_its_own_row_only() -> None:
    good: list[str] = []

    def broken(piece: str) -> None:
        raise RuntimeError("the client went away")

    streamer = RowStreamer(TOKENIZER, [broken, good.append], [10, 10])
    streamer.put(torch.zeros((2, 1), dtype=torch.long))
    for token in TOKENIZER.encode("ok go", add_special_tokens=False):
        streamer.put(torch.tensor([token, token]))
    assert "".join(good) == "ok go"


def test_a_request_keeps_its_sink_when_fitted_and_never_serializes_it() -> None:
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}]).streaming(print)
    fitted = request.fitted(5, prompt_tokens=3)
    assert fitted.text_sink is print and fitted.max_new_tokens == 5
    assert "sink" not in request.model_dump_json()
    assert ChatRequest(messages=[]).text_sink is None


# ------------------------------------------------------------------------------------- the local model, end to end


@pytest.fixture
def local(store: SkillStore, tmp_path: Path) -> LocalChatModel:
    base = tiny_base()
    for name, seed in (("loud", 1), ("louder", 2)):
        store.create(name, random_adapter(tiny_base(), tmp_path / name, seed=seed, std=2.0), kind="style")
    return LocalChatModel(base, Residency(base.model, store, max_hot=4), merge_for_decode=False)


def test_a_streamed_mixed_batch_answers_what_an_unstreamed_one_does(local: LocalChatModel) -> None:
    def request(skills: list[tuple[str, int]], budget: int) -> ChatRequest:
        return ChatRequest(messages=[{"role": "user", "content": "tell me"}], skills=skills, max_new_tokens=budget)

    plain = [request([("loud", 1)], 24), request([], 16), request([("louder", 1)], 8)]
    expected = local.generate_batch(plain)
    streams: list[list[str]] = [[], []]
    streamed = local.generate_batch(
        [plain[0].streaming(streams[0].append), plain[1], plain[2].streaming(streams[1].append)]
    )
    assert [g.text for g in streamed] == [g.text for g in expected]
    for pieces, generation in zip(streams, (streamed[0], streamed[2]), strict=True):
        joined = "".join(pieces)
        assert joined + unstreamed(generation.text, joined) == generation.text
        assert generation.text.startswith(joined) and len(pieces) > 1  # pieces, not the whole at the end


# ------------------------------------------------------------------------------------------------------ the server


class SteppedModel:
    """A backend that streams "Hello", then waits until the test has read it, then finishes (or fails)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.read_first = threading.Event()
        self.waited_in_vain = False

    def generate(self, messages: Any, **options: Any) -> Generation:
        return self.generate_batch([ChatRequest(messages=list(messages))])[0]

    def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        for request in requests:
            if request.text_sink is not None:
                request.text_sink("Hello")
        self.waited_in_vain = not self.read_first.wait(timeout=20)
        if self.fail:
            raise RuntimeError("the model fell over")
        return [Generation(text="Hello world", prompt_tokens=2, completion_tokens=2) for _ in requests]


def _sse(store: SkillStore, model: SteppedModel) -> tuple[list[str], int]:
    body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    lines: list[str] = []
    with running_server(create_app(model, store)) as url, httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{url}/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                if "Hello" in line:  # the first piece came while the model is still generating
                    model.read_first.set()
            return lines, response.status_code


def test_the_server_sends_each_piece_while_the_model_is_still_generating(store: SkillStore) -> None:
    model = SteppedModel()
    lines, status = _sse(store, model)
    assert status == 200 and not model.waited_in_vain
    assert completion_text(lines) == "Hello world"
    assert lines[-1] == "data: [DONE]"


def test_a_failure_after_the_stream_started_arrives_as_an_error_event(store: SkillStore) -> None:
    model = SteppedModel(fail=True)
    lines, status = _sse(store, model)
    assert status == 200 and not model.waited_in_vain  # the status was sent with the first piece
    errors = [json.loads(line[6:]) for line in lines if line.startswith("data: {") and '"error"' in line]
    assert errors and "the model fell over" in errors[0]["error"]["message"]
    assert lines[-1] == "data: [DONE]"
