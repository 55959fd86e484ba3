"""Integration (issue 22): on the real base, negatives teach a tool habit to stay quiet where no offered tool fits.

Same demonstrations (the same episodes, ids included, so the same held-out split), same seed, same recipe: one skill
trained with the default negatives (`negative_share`), one with none. Both are asked BFCL's irrelevance test cases
(task-like questions whose offered functions do not fit them; external, never trained on): the one trained with
negatives must call on fewer of them. The gate's own thresholds are opened (margin 1.0) so that both skills are
committed whatever they score: this test compares what training did, not what the gate would keep.

The budget: 48 simple_python train demonstrations, at most 40 steps per skill, 40 irrelevance cases per skill;
two trainings on 2 CPU cores take several minutes, so the test is `slow` (`make test-all`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from peft import PeftModel

from agent import Agent, Settings
from agent.backends.local import LocalChatModel
from agent.evals.bfcl.data import load_cases
from agent.evals.bfcl.harness import evaluate
from agent.evals.bfcl.practice import demonstration
from agent.evals.bfcl.recipe import MAX_NEW_TOKENS, bfcl_consolidation
from memory import Embedder, InMemoryBuffer
from memory.consolidate import ConsolidationConfig
from skills import Residency, SkillStore

N_DEMONSTRATIONS = 48
N_IRRELEVANT = 40
MAX_STEPS = 40


@pytest.mark.slow
def test_negatives_make_a_tool_habit_call_less_where_no_offered_tool_fits(
    real_base: Any, real_settings: Settings, tmp_path: Path
) -> None:
    demonstrations = [
        demonstration(case) for case in load_cases(real_settings.home, "simple_python", "train")[:N_DEMONSTRATIONS]
    ]
    irrelevant = load_cases(real_settings.home, "irrelevance", "test", limit=N_IRRELEVANT)
    assert len(demonstrations) == N_DEMONSTRATIONS and len(irrelevant) == N_IRRELEVANT
    embedder = Embedder()  # the real one: the negatives' similarity rule is tuned for it
    share = ConsolidationConfig().negative_share
    assert share > 0, "negatives are in the default recipe"
    rates, reports = {}, {}
    for skill, negative_share in (("habit-plain", 0.0), ("habit-negatives", share)):
        # a store each: in one store, the second skill's episodes (the same ids) would be reconciled as consolidated
        store = SkillStore(tmp_path / skill / "skills", base_fingerprint=real_base.fingerprint)
        residency = Residency(real_base.model, store)
        try:  # the base is shared by the session's tests: take the adapters off it even when an assert fails
            agent = Agent(
                settings=Settings(home=tmp_path / skill),
                base=real_base,
                model=LocalChatModel(real_base, residency),
                store=store,
                tools=[],
                checkpointer=InMemorySaver(),
                buffer=InMemoryBuffer(embedder),
                max_steps=1,
                max_new_tokens=MAX_NEW_TOKENS,
                consolidation=bfcl_consolidation(
                    negative_share=negative_share, max_steps=MAX_STEPS, margin=1.0, relevance_margin=1.0
                ),
            )
            for episode in demonstrations:  # the same episodes (same ids: the same held-out split) for both
                agent.learn_from(episode)
            (report,) = agent.consolidate(skill, min_episodes=1)
            assert report.promoted and report.revision == 1, report.reason
            reports[skill] = report
            result = evaluate(agent, "irrelevance", "test", mode="skill", skill=skill, cases=irrelevant)
            rates[skill] = result.tool_call_rate
        finally:
            if isinstance(residency.model, PeftModel):
                residency.model.unload()  # the next skill, and the session's other tests, get the plain base

    plain, negatives = reports["habit-plain"], reports["habit-negatives"]
    for skill, report in reports.items():  # the figures, for the README (`pytest -s`)
        print(
            f"{skill}: irrelevance calls {rates[skill]:.1%}, gate mismatched calls "
            f"{report.candidate.mismatched_call_rate} (base {report.current.mismatched_call_rate}), "
            f"held-out {report.candidate.heldout_match}, off-task {report.candidate.offtask_call_rate:.2f}"
        )
    assert plain.n_negatives == 0 and negatives.n_negatives > 0, (plain.notes, negatives.notes)
    assert plain.n_train == negatives.n_train and plain.n_replay == negatives.n_replay, "same data otherwise"
    assert plain.n_mismatched == negatives.n_mismatched, "the gate asked the same held-out mismatched cases"
    assert rates["habit-negatives"] < rates["habit-plain"], (
        f"with negatives {rates['habit-negatives']:.0%} of {N_IRRELEVANT} irrelevance cases called, "
        f"without {rates['habit-plain']:.0%}; reports: {negatives.report_path}, {plain.report_path}"
    )
