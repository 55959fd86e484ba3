"""Integration: composition, merged decoding and mixed-skill batches on the real base (SmolLM2-135M)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from peft import PeftModel

from agent import Agent, Settings
from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatRequest
from agent.testing import random_adapter
from memory import HashingEmbedder, InMemoryBuffer
from skills import Residency, SkillStore

PROMPTS = ["Name three fruits.", "What is the capital of France?", "Say hello in Spanish.", "Count to five."]


@pytest.fixture
def local(real_base: Any, tmp_path: Path) -> Iterator[LocalChatModel]:
    store = SkillStore(tmp_path / "skills", base_fingerprint=real_base.fingerprint)
    shapes = {"s0": ("q_proj", "v_proj"), "s1": ("q_proj", "k_proj", "v_proj", "o_proj"), "s2": ("down_proj",)}
    for seed, (name, targets) in enumerate(shapes.items()):
        folder = random_adapter(real_base, tmp_path / name, seed=seed, target_modules=targets, std=0.02)
        store.create(name, folder, kind="style")
    residency = Residency(real_base.model, store, max_hot=4)
    yield LocalChatModel(real_base, residency, merge_for_decode=False)
    if isinstance(residency.model, PeftModel):
        residency.model.unload()  # the session's base goes back as it came


def test_mixed_batch_matches_one_at_a_time_on_the_real_base(local: LocalChatModel) -> None:
    skill_sets: list[list[tuple[str, int]]] = [[], [("s0", 1)], [("s1", 1)], [("s0", 1), ("s2", 1)]]
    requests = [
        ChatRequest(messages=[{"role": "user", "content": p}], skills=s, max_new_tokens=12)
        for p, s in zip(PROMPTS, skill_sets, strict=True)
    ]
    serial = [local.generate(r.messages, skills=r.skills, max_new_tokens=12) for r in requests]
    batched = local.generate_batch(requests)
    same = sum(a.tokens == b.tokens for a, b in zip(serial, batched, strict=True))
    assert same >= 3, [(a.text, b.text) for a, b in zip(serial, batched, strict=True)]  # padding may flip a near-tie
    assert all(b.completion_tokens > 0 and b.text for b in batched)
    # the merged path (the default for one conversation) says the same as peft's LoRA path
    local.merge_for_decode = True
    local.generate(requests[3].messages, skills=requests[3].skills, max_new_tokens=2)  # merged from the next turn on
    merged = local.generate(requests[3].messages, skills=requests[3].skills, max_new_tokens=12)
    assert merged.text == serial[3].text
    assert local.residency.merged_adapter is not None


def test_agent_runs_a_batch_of_tasks_with_composed_skills(local: LocalChatModel, tmp_path: Path) -> None:
    agent = Agent(
        settings=Settings(home=tmp_path / "home"),
        model=local,
        store=local.residency.store,
        tools=[],
        buffer=InMemoryBuffer(HashingEmbedder()),
        checkpointer=InMemorySaver(),
        max_new_tokens=12,
    )
    skills: list[list[str]] = [[], ["s0"], ["s0", "s1"], ["s2"]]
    tasks: list[str | dict[str, Any]] = [
        {"task": p, "skills": s, "examples": 0} for p, s in zip(PROMPTS, skills, strict=True)
    ]
    results = agent.run_batch(tasks)
    assert [r.trajectory.task for r in results] == PROMPTS
    assert [[u.name for u in r.trajectory.skills] for r in results] == skills
    assert all(r.answer for r in results)
