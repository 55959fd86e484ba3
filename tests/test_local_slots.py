"""The in-process chat model on adapter slots (skills.runtime): batches and single conversations answer what the
peft path answers, no peft adapter is loaded for skills the slots hold, misfits fall back to peft, and forgetting a
revision empties its slot."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest

from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatRequest
from agent.config import Settings
from agent.runtime import local_runtime
from agent.testing import tiny_base
from skills import AdapterSlots, Residency, SkillStore

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]
SKILL_SETS: list[list[tuple[str, int]]] = [[], [("a", 1)], [("b", 1)], [("a", 1), ("c", 1)], [("c", 1)]]
PROMPTS = ["ping", "hello", "colour of the sky?", "call the tool", "2+2?"]


@pytest.fixture
def filled(store: SkillStore, loud: dict[str, Path], tmp_path: Path) -> SkillStore:
    for name, folder in loud.items():
        shutil.copytree(folder, tmp_path / "copies" / name)
        store.create(name, tmp_path / "copies" / name, kind="style")
    return store


def local(store: SkillStore, *, slots: bool, r_max: int = 64) -> LocalChatModel:
    """Unmerged, so that single conversations run the LoRA path on both sides (merging rounds differently)."""
    base = tiny_base()
    runtime = AdapterSlots(base.model, capacity=8, r_max=r_max) if slots else None
    return LocalChatModel(base, Residency(base.model, store, max_hot=4, slots=runtime), merge_for_decode=False)


def requests() -> list[ChatRequest]:
    return [
        ChatRequest(messages=[{"role": "user", "content": p}], skills=skills, max_new_tokens=6 + i)
        for i, (p, skills) in enumerate(zip(PROMPTS, SKILL_SETS, strict=True))
    ]


def test_batches_and_single_conversations_answer_as_peft_does(filled: SkillStore) -> None:
    slotted, plain = local(filled, slots=True), local(filled, slots=False)
    want = [g.tokens for g in plain.generate_batch(requests())]
    assert len({tuple(t) for t in want}) == 5, "the adapters must visibly change the answers"
    assert [g.tokens for g in slotted.generate_batch(requests())] == want
    for request in requests():
        got = slotted.generate(request.messages, skills=request.skills, max_new_tokens=request.max_new_tokens)
        ref = plain.generate(request.messages, skills=request.skills, max_new_tokens=request.max_new_tokens)
        assert got.tokens == ref.tokens
    stats = slotted.residency.stats
    assert stats.model_loads == 0 and stats.slot_loads == 3  # nothing went through peft; each skill copied once
    assert slotted.residency.slots.pinned() == []


def test_a_skill_the_slots_refuse_is_served_by_peft(filled: SkillStore) -> None:
    slotted, plain = local(filled, slots=True, r_max=4), local(filled, slots=False)  # "a" has r=8 > r_max
    want = [g.tokens for g in plain.generate_batch(requests())]
    assert [g.tokens for g in slotted.generate_batch(requests())] == want
    assert slotted.residency.stats.model_loads > 0  # the batch fell back to peft's adapter_names
    assert slotted.residency.slots.pinned() == []  # the pins taken before the refusal were given back


def test_forgetting_a_revision_empties_its_slot(filled: SkillStore) -> None:
    slotted = local(filled, slots=True)
    slotted.generate_batch(requests())
    assert slotted.residency.slots.slot_of(("a", 1)) is not None
    slotted.residency.forget("a", 1)
    assert slotted.residency.slots.slot_of(("a", 1)) is None and ("a", 1) not in slotted.residency.warm()


def test_with_slots_a_batch_is_bounded_by_their_capacity_not_the_hot_set(filled: SkillStore) -> None:
    many = [ChatRequest(messages=[{"role": "user", "content": "ping"}], skills=[(n, 1)]) for n in "abcabc"]
    slotted, plain = local(filled, slots=True), local(filled, slots=False)  # 8 slots
    slotted.residency.max_hot = plain.residency.max_hot = 2  # fewer than the 3 distinct skills
    assert list(slotted.batches_that_fit(list(range(6)), many)) == [list(range(6))]
    assert [g.tokens for g in slotted.generate_batch(many)] == [g.tokens for g in plain.generate_batch(many)]
    assert list(plain.batches_that_fit(list(range(6)), many)) == [[0, 1], [2, 3], [4, 5]]


def test_the_default_runtime_runs_every_skill_path_on_slots(
    filled: SkillStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `Agent`, `habitloop serve` and the benchmarks build: one skill, a composition and a mixed batch all run on
    the slots, and peft loads nothing (its adapters stay for merging, training and what the slots refuse)."""
    monkeypatch.delenv("HABITLOOP_SLOTS", raising=False)
    runtime = local_runtime(Settings(home=tmp_path / "home"), base=tiny_base(), store=filled)
    slots = runtime.residency.slots
    assert slots is not None and slots.capacity == Settings().slots > 0
    plain = local(filled, slots=False)
    hello = [{"role": "user", "content": "hello"}]
    for skills in ([("a", 1)], [("a", 1), ("c", 1)]):
        got = runtime.model.generate(hello, skills=skills, max_new_tokens=5)  # a first turn: not merged
        assert got.tokens == plain.generate(hello, skills=skills, max_new_tokens=5).tokens
    assert [g.tokens for g in runtime.model.generate_batch(requests())] == [
        g.tokens for g in plain.generate_batch(requests())
    ]
    stats = runtime.residency.stats
    assert stats.model_loads == 0 and stats.slot_loads == 3
    assert sorted(slots.resident()) == [("a", 1), ("b", 1), ("c", 1)]  # type: ignore[type-var]
    monkeypatch.setenv("HABITLOOP_SLOTS", "0")
    assert local_runtime(Settings(home=tmp_path / "home"), base=tiny_base(), store=filled).residency.slots is None


def test_slots_nobody_holds_any_more_leave_the_base_unhooked(filled: SkillStore) -> None:
    """A shared base outlives the runtimes built on it (one agent after another): their hooks must go with them."""
    base = tiny_base()

    def hooks() -> int:
        return sum(len(module._forward_hooks) for module in base.model.modules())

    residency = Residency(base.model, filled, slots=AdapterSlots(base.model, capacity=2))
    residency.slot("a", 1)
    assert hooks() > 0
    del residency
    gc.collect()
    assert hooks() == 0
