"""Integration: on the real base, a behaviour the base does not have is learned by consolidating buffered episodes.

The behaviour: answering weather questions with a call of a made-up tool in the exact format. It is measured on
held-out questions before and after, with no examples in the prompt, through the agent's own model path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent import Agent, Settings
from agent.backends.local import LocalChatModel
from memory import HashingEmbedder, InMemoryBuffer, Trajectory
from memory.consolidate import ConsolidationConfig
from skills import Residency, SkillStore
from tools import tool

CITIES = [
    "Paris", "Berlin", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Rome", "Seoul",
    "Accra", "Dublin", "Hanoi", "Kyiv", "Perth", "Riga", "Sofia", "Tunis", "Vienna", "Zagreb",
]  # fmt: skip
TEMPLATES = ["What's the weather in {c}?", "Is it raining in {c} right now?", "How warm is it in {c} today?"]


@tool
def get_weather(city: str) -> str:
    """Current weather of a city.

    Args:
        city: the city name.
    """
    return f"{city}: 18 C, light rain"


def call(city: str) -> str:
    return f"<tool_call>{json.dumps({'name': 'get_weather', 'arguments': {'city': city}})}</tool_call>"


def first_reply_is_call(agent: Agent, question: str, city: str, skills: list[str]) -> bool:
    result = agent.run(question, skills=skills, examples=0, max_steps=1)
    agent.buffer.discard([result.run_id])  # measuring is not experience
    return result.steps[0].text.strip() == call(city)


# 4 minutes here; the demo's integration test consolidates on the real base too, so this one runs in `make test-all`
@pytest.mark.slow
def test_consolidating_demonstrations_teaches_the_base_a_new_tool_habit(
    real_base: Any, real_settings: Settings, tmp_path: Path
) -> None:
    store = SkillStore(tmp_path / "skills", base_fingerprint=real_base.fingerprint)
    residency = Residency(real_base.model, store)
    agent = Agent(
        settings=Settings(home=tmp_path),
        base=real_base,
        model=LocalChatModel(real_base, residency),
        store=store,
        tools=[get_weather],
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
        max_new_tokens=32,
        # training on CPU is not bit-reproducible across machines; this test allows a few stray calls on the
        # off-task prompts (up to 0.2, asserted below), so the gate does too
        # 5 epochs (29 steps): at 3 (17 steps) the habit held on only 4 of 6 probes in one CI run in several
        consolidation=ConsolidationConfig(kind="tool_habit", min_episodes=8, epochs=5.0, replay=12, margin=0.2),
    )
    try:  # the base is shared by the session's tests: take the adapter off it even when an assert fails
        train, held_out = CITIES[:14], CITIES[14:]
        for i, city in enumerate(train):
            question = TEMPLATES[i % 3].format(c=city)
            agent.learn_from(
                Trajectory.demonstration(
                    question,
                    [
                        {"role": "assistant", "content": call(city)},
                        {"role": "tool", "content": f"[get_weather] {city}: 18 C, light rain"},
                        {"role": "assistant", "content": f"In {city} it is 18 C with light rain."},
                    ],
                )
            )
        probes = [(TEMPLATES[i % 3].format(c=city), city) for i, city in enumerate(held_out)]
        before = sum(first_reply_is_call(agent, q, c, []) for q, c in probes) / len(probes)

        (report,) = agent.consolidate("weather-habit")
        assert report.promoted and report.created, report.reason
        assert agent.buffer.stats().unconsolidated_successes == 0, "consolidated episodes leave the retrieval pool"
        after = sum(first_reply_is_call(agent, q, c, ["weather-habit"]) for q, c in probes) / len(probes)

        assert before <= 0.2, f"the base should not have this habit already ({before:.0%})"
        assert after >= 0.8, f"the consolidated skill should have it ({after:.0%}); report: {report.report_path}"
        assert report.candidate.offtask_call_rate <= 0.2, "the habit must not leak into unrelated prompts"
    finally:
        residency.model.unload()
