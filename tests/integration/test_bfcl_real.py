"""Integration: the BFCL harness on the real base, a few cases (the real data: the bfcl-eval wheel, fetched once)."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from agent import Agent, Settings
from agent.backends.local import LocalChatModel
from agent.evals.bfcl.checker import check_call
from agent.evals.bfcl.data import CATEGORIES, load_cases
from agent.evals.bfcl.harness import evaluate
from agent.evals.bfcl.practice import record_demonstrations
from memory import HashingEmbedder, InMemoryBuffer
from skills import Residency, SkillStore


def test_base_and_retrieval_modes_on_real_bfcl_cases(real_base: Any, real_settings: Settings) -> None:
    store = SkillStore(real_settings.skills_dir, base_fingerprint=real_base.fingerprint)
    agent = Agent(
        settings=real_settings,
        base=real_base,
        model=LocalChatModel(real_base, Residency(real_base.model, store)),
        store=store,
        tools=[],
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
        max_new_tokens=48,
    )
    test = load_cases(real_settings.home, "simple_python", "test", limit=2)
    assert len(test) == 2 and all(c.split == "test" for c in test)
    base = evaluate(agent, "simple_python", "test", mode="base", cases=test)
    assert base.n == 2 and 0.0 <= base.accuracy <= 1.0
    assert 150 < base.prompt_tokens_mean < 600, "the system prompt lists the case's function"
    assert all(case.text for case in base.cases) and all(case.reason for case in base.cases)

    record_demonstrations(agent, load_cases(real_settings.home, "simple_python", "train", limit=3))
    retrieval = evaluate(agent, "simple_python", "test", mode="retrieval", k=2, cases=test[:1])
    assert retrieval.prompt_tokens_mean > base.cases[0].prompt_tokens, "worked examples lengthen the prompt"
    assert agent.buffer.stats().unconsolidated_successes == 3, "evaluation runs are not kept"


def test_every_demonstration_of_the_real_data_passes_the_checker(real_settings: Settings) -> None:
    """What `practice bfcl --demonstrations` trains on is correct by BFCL's rules, in all four categories. Five live
    cases cannot pass: BFCL's data marks a required parameter with no acceptable value."""
    loaded = {category: load_cases(real_settings.home, category) for category in CATEGORIES}
    assert all(loaded.values()), {category: len(cases) for category, cases in loaded.items()}  # else nothing is checked
    cases = [case for category_cases in loaded.values() for case in category_cases]
    for state_optional in (False, True):  # optional values left out (the default), or stated
        failing = [
            case.id
            for case in cases
            if not check_call(
                case.functions, case.possible_answer, case.ground_truth(state_optional=state_optional)
            ).valid
        ]
        assert len(failing) <= 5 and all(case_id.startswith("live_") for case_id in failing), (state_optional, failing)
