"""Continuous batching on the real base: requests that join a running decode at different steps, with skills on
adapter slots, answer what each answers alone, and the batcher answers a short request while a long one decodes."""

from __future__ import annotations

from pathlib import Path

from agent import Settings, load_base
from agent.backends.batching import BatchingChatModel
from agent.backends.continuous import ContinuousDecoder
from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatRequest, Generation
from agent.testing import random_adapter
from skills import AdapterSlots, Residency, SkillStore


def test_rows_joining_a_running_decode_answer_what_each_answers_alone(real_settings: Settings, tmp_path: Path) -> None:
    base = load_base(settings=real_settings)  # a model of its own: the slots hook its layers
    store = SkillStore(tmp_path / "skills", base_fingerprint=base.fingerprint)
    store.create("terse", random_adapter(base, tmp_path / "terse", seed=3, std=0.02), kind="style")
    slots = AdapterSlots(base.model, capacity=4, r_max=8)
    local = LocalChatModel(base, Residency(base.model, store, slots=slots), merge_for_decode=False)
    asked = [
        ChatRequest(messages=[{"role": "user", "content": q}], skills=skills, max_new_tokens=n)
        for q, skills, n in (
            ("What is the capital of France?", [], 12),
            ("Name a colour.", [("terse", 1)], 6),
            ("Write one sentence about the sea.", [("terse", 1)], 16),
        )
    ]
    alone = [local.generate_batch([request])[0] for request in asked]
    answers: dict[int, Generation | BaseException] = {}
    decoder = ContinuousDecoder(local, max_rows=4)
    joins = {0: [0], 3: [1], 7: [2]}  # the second joins the first mid-reply, the third after the second has left
    step = 0
    while step <= max(joins) or decoder.active:
        joiners = [(asked[i], lambda answer, i=i: answers.__setitem__(i, answer)) for i in joins.get(step, [])]
        assert decoder.join(joiners) == []
        decoder.step()
        step += 1
    assert [answers[i].text for i in range(3)] == [g.text for g in alone]  # type: ignore[union-attr]
    assert alone[0].text and alone[2].text != alone[0].text
    with BatchingChatModel(local, max_batch=4, max_wait_ms=0, continuous=True) as batcher:
        futures = [batcher.submit(request) for request in asked]
        assert [f.result(timeout=300).text for f in futures] == [g.text for g in alone]
    assert batcher.stats.joined == 3
    slots.close()
