"""Continuous batching (agent.backends.continuous): rows that join a running decode between steps, and leave it when
they end, answer what a flushed batch answers; failures reach their own callers; the batcher runs it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.backends.batching import BatchingChatModel
from agent.backends.continuous import ContinuousDecoder
from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatRequest, Generation
from agent.testing import tiny_base
from skills import AdapterSlots, Residency, SkillNotFoundError, SkillStore

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]
SKILL_SETS: list[list[tuple[str, int]]] = [[], [("a", 1)], [("b", 1)], [("a", 1), ("c", 1)], [("c", 1)], [("a", 1)]]
PROMPTS = ["ping", "hello there, how are you", "colour of the sky?", "call the tool", "2+2?", "a longer prompt " * 4]


@pytest.fixture
def local(store: SkillStore, loud: dict[str, Path], tmp_path: Path) -> LocalChatModel:
    for name, folder in loud.items():
        shutil.copytree(folder, tmp_path / "copies" / name)
        store.create(name, tmp_path / "copies" / name, kind="style")
    base = tiny_base()
    slots = AdapterSlots(base.model, capacity=8, r_max=64)
    return LocalChatModel(base, Residency(base.model, store, max_hot=4, slots=slots), merge_for_decode=False)


def requests() -> list[ChatRequest]:
    return [
        ChatRequest(messages=[{"role": "user", "content": p}], skills=skills, max_new_tokens=5 + 3 * i)
        for i, (p, skills) in enumerate(zip(PROMPTS, SKILL_SETS, strict=True))
    ]


def decode(decoder: ContinuousDecoder, joins: dict[int, list[ChatRequest]]) -> list[Generation | BaseException]:
    """Run `decoder`, joining `joins[step]` before step `step`, until every row has ended; answers in join order."""
    answers: dict[int, Generation | BaseException] = {}
    order = 0
    step = 0
    while step <= max(joins) or decoder.active:
        joiners = []
        for request in joins.get(step, []):
            joiners.append((request, lambda answer, i=order: answers.__setitem__(i, answer)))
            order += 1
        assert decoder.join(joiners) == []
        decoder.step()
        step += 1
    return [answers[i] for i in range(order)]


def test_rows_joining_and_leaving_answer_what_a_flushed_batch_answers(local: LocalChatModel) -> None:
    want = local.generate_batch(requests())
    wanted = [g.tokens for g in want]
    asked = requests()
    # the first two together, one at step 2, two at step 5 (after the shortest has left), the last at step 11
    got = decode(ContinuousDecoder(local, max_rows=8), {0: asked[:2], 2: [asked[2]], 5: asked[3:5], 11: [asked[5]]})
    assert all(isinstance(g, Generation) for g in got)
    assert [g.tokens for g in got] == wanted  # type: ignore[union-attr]
    assert [g.text for g in got] == [g.text for g in want]  # type: ignore[union-attr]
    assert [g.prompt_tokens for g in got] == [g.prompt_tokens for g in want]  # type: ignore[union-attr]
    slots = local.residency.slots
    assert slots is not None and not slots.pinned()  # every row's pins were released as it left


def test_a_row_that_cannot_join_leaves_the_others_alone(local: LocalChatModel) -> None:
    decoder = ContinuousDecoder(local, max_rows=3)
    asked = requests()
    answers: list[Any] = []
    ghost = ChatRequest(messages=[{"role": "user", "content": "x"}], skills=[("a", 1), ("ghost", 1)])
    assert decoder.join([(asked[1], answers.append), (ghost, answers.append), (asked[0], answers.append)]) == []
    assert isinstance(answers[0], SkillNotFoundError)  # answered at once; the other two joined
    assert decoder.active == 2 and decoder.free == 1
    with pytest.raises(ValueError, match="cannot join"):
        decoder.join([(asked[2], answers.append), (asked[3], answers.append)])
    while decoder.active:
        decoder.step()
    flushed = local.generate_batch([asked[1], asked[0]])
    assert sorted(a.tokens for a in answers[1:]) == sorted(g.tokens for g in flushed)
    slots = local.residency.slots
    assert slots is not None and not slots.pinned()  # the ghost's composition left no pin behind


def test_skills_the_slots_cannot_serve_are_handed_back(store: SkillStore, loud: dict[str, Path]) -> None:
    shutil.copytree(loud["a"], store.root.parent / "a")
    store.create("a", store.root.parent / "a", kind="style")
    base = tiny_base()
    plain = LocalChatModel(base, Residency(base.model, store, max_hot=4), merge_for_decode=False)  # no slots
    decoder = ContinuousDecoder(plain)
    skilled = ChatRequest(messages=[{"role": "user", "content": "x"}], skills=[("a", 1)])
    answers: list[Any] = []
    refused = decoder.join([(skilled, answers.append), (requests()[0], answers.append)])
    assert [request.skills for request, _ in refused] == [[("a", 1)]] and decoder.active == 1
    with BatchingChatModel(plain, max_batch=4, continuous=True) as batcher:  # answered the flushed way
        assert batcher.submit(skilled).result(timeout=60).tokens == plain.generate_batch([skilled])[0].tokens
    assert batcher.stats.joined == 0 and batcher.stats.batches == 1


def test_streamed_rows_send_what_a_streamed_flushed_batch_sends(local: LocalChatModel) -> None:
    continuous: list[list[str]] = [[] for _ in requests()]
    flushed: list[list[str]] = [[] for _ in requests()]
    got = decode(ContinuousDecoder(local), {0: [r.streaming(continuous[i].append) for i, r in enumerate(requests())]})
    want = local.generate_batch([r.streaming(flushed[i].append) for i, r in enumerate(requests())])
    assert continuous == flushed and any(continuous)
    assert [g.text for g in got] == [g.text for g in want]  # type: ignore[union-attr]


def test_the_batcher_lets_requests_join_a_running_decode(local: LocalChatModel) -> None:
    want = [g.tokens for g in local.generate_batch(requests())]
    with BatchingChatModel(local, max_batch=4, max_wait_ms=0, continuous=True) as batcher:
        futures = [batcher.submit(request) for request in requests()]  # more than 4: some wait for a free row
        got = [future.result(timeout=120).tokens for future in futures]
        failing = batcher.submit(ChatRequest(messages=[{"role": "user", "content": "x"}], skills=[("ghost", 1)]))
        with pytest.raises(SkillNotFoundError):
            failing.result(timeout=60)
        assert batcher.submit(requests()[0]).result(timeout=60).tokens == want[0]  # still serving
    assert got == want
    assert batcher.stats.joined >= len(want) and batcher.stats.largest_batch <= 4


def test_a_request_arriving_mid_decode_is_answered_before_the_long_one_ends(local: LocalChatModel) -> None:
    """The point of it: a short request that comes while a long one decodes does not wait for all of it."""
    long = ChatRequest(messages=[{"role": "user", "content": "go on"}], max_new_tokens=300)
    short = ChatRequest(messages=[{"role": "user", "content": "hi"}], max_new_tokens=3)
    with BatchingChatModel(local, max_batch=4, max_wait_ms=0, continuous=True) as batcher:
        first = batcher.submit(long)
        deadline = time.monotonic() + 60
        while batcher.stats.decode_steps < 5:  # the long one is decoding
            assert time.monotonic() < deadline and not first.done()
            time.sleep(0.01)
        second = batcher.submit(short)
        assert len(second.result(timeout=60).tokens) == 3
        assert not first.done()  # answered while the long one still decodes
        assert len(first.result(timeout=120).tokens) == 300
    assert batcher.stats.largest_batch == 2


def test_the_server_decodes_continuously_when_asked(local: LocalChatModel, store: SkillStore) -> None:
    import openai

    from agent.serve.app import create_app, running_server

    want = local.generate_batch(requests()[:2])
    app = create_app(local, store, continuous=True)
    with running_server(app) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        whole = client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "ping"}], max_tokens=5
        )
        chunks = client.chat.completions.create(
            model="a", messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=8, stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        health = httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json()
    assert whole.choices[0].message.content == want[0].text
    assert streamed == want[1].text
    assert health["mode"] == "continuous"
    assert health["batching"]["joined"] == 2 and health["batching"]["decode_steps"] > 0
