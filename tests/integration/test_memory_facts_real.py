"""Integration: what one dev user of BFCL memory says goes into their memory adapter on the real base (small budget:
notetaker's first two conversations, the questions whose answers they hold)."""

from __future__ import annotations

from typing import Any

from agent import Agent, Settings
from agent.evals.memory.data import load_conversations, load_questions, source_conversations
from agent.evals.memory.harness import evaluate_memory
from agent.evals.memory.play import play_conversations
from memory.facts import MEMORY_SKILL
from memory.recipe import facts_recipe

USER = "notetaker"  # a dev user


def test_a_users_turns_become_their_memory_adapter_and_forgetting_rebuilds_it(
    real_base: Any, real_settings: Settings
) -> None:
    recipe = facts_recipe(max_steps=16, replay=4)
    agent = Agent(settings=real_settings, base=real_base, instance=USER, tools=[], max_steps=1, consolidation=recipe)
    conversations = load_conversations(real_settings.home, USER)[:2]
    played = play_conversations(agent, conversations, progress=False)
    told = {t.id: t.task for t in agent.buffer.list(instance=USER)}
    assert played.turns_played == sum(len(c.turns) for c in conversations) == len(told)

    (report,) = agent.consolidate(facts=True)
    assert report.promoted and report.skill == MEMORY_SKILL and report.n_holdout >= 1
    record = agent.personal_store().revision(MEMORY_SKILL)
    assert set(record.provenance.episode_ids) == set(told), "the adapter's provenance is exactly what the user said"
    assert record.evaluation.details["config"]["facts"]["recipe"] == "self-study"
    assert not agent.buffer.list(consolidated=False, instance=USER), "the buffer let the turns go"

    ids = {c.id for c in conversations}
    questions = [
        q for q in load_questions(real_settings.home, USER) if set(source_conversations(q, conversations)) & ids
    ]
    assert questions
    rows = {mode: evaluate_memory(agent, USER, mode, questions=questions) for mode in ("base", "retrieval", "weights")}
    for mode, row in rows.items():
        assert row.n == len(questions) and 0.0 <= row.accuracy <= 1.0 and row.answer_tokens_mean <= 48, mode
    assert rows["weights"].skill == f"{USER}/{MEMORY_SKILL}@{record.number}"
    assert rows["weights"].prompt_tokens_mean == rows["base"].prompt_tokens_mean, (
        "nothing in the prompt but the question"
    )
    assert rows["retrieval"].prompt_tokens_mean > rows["base"].prompt_tokens_mean
    texts = {t.task for t in agent.buffer.list(instance=USER)}
    assert texts == set(told.values()), "no question was recorded: it would be trained on"

    # forget the second conversation: its turns leave the buffer and the weights (revision 1 held them: rebuilt)
    gone = conversations[1].id
    forgotten = [t.id for t in agent.buffer.list(instance=USER) if t.thread_id == gone]
    result = agent.forget(forgotten, reason="test")
    (skill,) = result.skills
    assert skill.action == "rebuild" and skill.revisions_deleted == [record.number] and skill.new_revision
    rebuilt = agent.personal_store().revision(MEMORY_SKILL)
    assert rebuilt.number == skill.new_revision and rebuilt.parent is None, "no clean ancestor: fresh weights"
    assert set(rebuilt.provenance.episode_ids) == set(told) - set(forgotten)
    assert not (agent.personal_store().skill_dir(MEMORY_SKILL) / "revs" / str(record.number)).exists()
    assert not set(forgotten) & {t.id for t in agent.buffer.list(instance=USER)}
    after = evaluate_memory(agent, USER, "weights", questions=questions)
    assert after.skill == f"{USER}/{MEMORY_SKILL}@{rebuilt.number}" and after.n == len(questions)
