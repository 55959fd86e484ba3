"""The facts recipe: what a user said becomes question/answer pairs; consolidated into their memory adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory import HashingEmbedder, InMemoryBuffer, Outcome, Trajectory
from memory.consolidate import Consolidator
from memory.facts import (
    QUESTION_SHOTS,
    FactPair,
    FactsConfig,
    answer_recall,
    chunks_of,
    fact_pairs,
    parse_question,
    question_chat,
    split_pairs,
    turn_pairs,
)
from memory.gate import Scores, decide
from memory.recipe import facts_recipe
from skills import Residency, SkillStore
from skills.errors import UserError


def said(text: str, *, instance: str | None = "ann", status: str = "unknown") -> Trajectory:
    return Trajectory(thread_id="t", task=text, instance=instance, outcome=Outcome(status=status))  # type: ignore[arg-type]


def scripted(replies: dict[str, str]) -> Any:
    """A stand-in for the base: answers a question prompt by the sentence it asks about."""

    def generate(chats: list[list[dict[str, str]]], tokens: int) -> list[str]:
        out = []
        for chat in chats:
            said = " ".join(m["content"] for m in chat[-2:])
            out.append(next((reply for key, reply in replies.items() if key in said), "I am not sure."))
        return out

    return generate


def test_long_turns_are_cut_at_sentence_ends_and_keep_their_episode() -> None:
    turn = said("My name is Ann. " * 30)
    chunks = chunks_of([turn], max_chars=100)
    assert len(chunks) > 1 and all(len(c.text) <= 100 for c in chunks)
    assert " ".join(c.text for c in chunks) == turn.task.strip()
    assert {c.episode_id for c in chunks} == {turn.id}


def test_the_base_is_asked_one_sentence_at_a_time_with_worked_examples_as_turns() -> None:
    chat = question_chat("I live in Lisbon.")
    assert [m["role"] for m in chat] == ["user", "assistant"] * len(QUESTION_SHOTS) + ["user"]
    assert chat[-1]["content"].endswith("I live in Lisbon.")
    assert question_chat("x", 1)[1]["content"] == QUESTION_SHOTS[1][1], "a variant rotates the examples"


@pytest.mark.parametrize(
    ("reply", "question"),
    [
        ("Where do I live?", "Where do I live?"),
        ("1. Where do I live?\n2. Why?", "Where do I live?"),
        ("Question: What is my dog called?", "What is my dog called?"),
        ("I live in Lisbon.", None),
        ("?", None),
        ("", None),
    ],
)
def test_parse_question(reply: str, question: str | None) -> None:
    assert parse_question(reply) == question


@given(st.text(max_size=300))
def test_parse_question_never_fails_and_returns_a_question(reply: str) -> None:
    question = parse_question(reply)
    assert question is None or (question.endswith("?") and "\n" not in question)


def test_self_study_answers_with_the_users_own_sentence_by_default() -> None:
    turn = said("Hi! My dog is called Rex and he is five. I work as a nurse in Porto.")
    generate = scripted({"Rex": "What is my dog called?", "nurse": "What is my job?"})
    pairs = fact_pairs([turn], generate, FactsConfig())
    assert [(p.question, p.answer) for p in pairs] == [
        ("What is my dog called?", "My dog is called Rex and he is five."),
        ("What is my job?", "I work as a nurse in Porto."),
    ], "greetings are not asked about; each answer is the sentence asked about"
    assert all(p.episode_id == turn.id for p in pairs)


def test_self_study_can_learn_the_bases_answers_given_the_chunk() -> None:
    turn = said("My dog is called Rex and he is five years old.")
    generate = scripted({"Answer the user's question": "Your dog is Rex.", "Rex": "What is my dog called?"})
    (pair,) = fact_pairs([turn], generate, FactsConfig(answers="base"))
    assert (pair.question, pair.answer) == ("What is my dog called?", "Your dog is Rex.")


def test_the_turns_recipe_targets_the_users_words() -> None:
    turn = said("My dog is called Rex and he is five years old.")
    (pair,) = turn_pairs(chunks_of([turn], 400))
    assert pair.answer == turn.task and "My dog is called Rex and" in pair.question
    assert fact_pairs([turn], scripted({}), FactsConfig(recipe="turns")) == [pair]


def test_held_out_pairs_are_chosen_by_question_so_a_rerun_holds_out_the_same() -> None:
    pairs = [FactPair(f"Question {i}?", f"answer {i}", "e") for i in range(20)]
    train, held = split_pairs(pairs, 0.1)
    assert len(held) == 2 and len(train) == 18 and not set(map(id, train)) & set(map(id, held))
    assert split_pairs(list(reversed(pairs)), 0.1)[1] == sorted(held, key=lambda p: pairs.index(p), reverse=True)
    assert split_pairs(pairs[:4], 0.5) == (pairs[:4], []), "too few to hold any out"


@pytest.mark.parametrize(
    ("reply", "answer", "recalled"),
    [
        ("You live in Lisbon, by the sea.", "I live in Lisbon.", True),
        ("I do not know.", "I live in Lisbon.", False),
        ("Rex is a dog.", "My dog is called Rex and he is five years old.", False),
        ("Your dog Rex is five years old.", "My dog is called Rex and he is five years old.", True),
        ("anything", "I am.", True),
    ],
)
def test_answer_recall_needs_half_the_content_words(reply: str, answer: str, recalled: bool) -> None:
    assert answer_recall(reply, answer) is recalled


# ------------------------------------------------------------------------------------------- consolidation


@pytest.fixture
def setup(tmp_path: Path, fresh_base: Any) -> dict[str, Any]:
    store = SkillStore(tmp_path / "instances" / "ann", base_fingerprint=fresh_base.fingerprint)
    buffer = InMemoryBuffer(HashingEmbedder())
    residency = Residency(fresh_base.model, store, max_hot=2)
    config = facts_recipe(max_steps=3, min_steps=2, replay=2, max_new_tokens=4)
    config = config.model_copy(update={"facts": FactsConfig(recipe="turns", holdout_fraction=0.3)})
    consolidator = Consolidator(
        buffer, store, residency, fresh_base.tokenizer, config=config, instance="ann", progress=False
    )
    return {"store": store, "buffer": buffer, "consolidator": consolidator}


def test_what_the_user_said_goes_into_their_memory_skill_and_leaves_the_buffer(setup: dict[str, Any]) -> None:
    store, buffer, consolidator = setup["store"], setup["buffer"], setup["consolidator"]
    turns = [said(f"Fact number {i}: my locker code is {1000 + i}.") for i in range(6)]
    failed = said("This turn failed.", status="failure")
    other = said("I am Bob and I live in Oslo.", instance="bob")
    buffer.add_many([*turns, failed, other])

    report = consolidator.consolidate_facts()
    assert report is not None and report.promoted and report.skill == "memory" and report.revision == 1
    manifest = store.get("memory")
    assert manifest.kind == "memory" and "ann" in manifest.description
    record = store.revision("memory")
    assert set(record.provenance.episode_ids) == {t.id for t in turns}, "only ann's turns that did not fail"
    assert record.evaluation.details["config"]["facts"]["recipe"] == "turns", "the recipe is kept with the revision"
    assert report.n_holdout == 2 and report.candidate.heldout_match is not None, "generated pairs are held out"
    assert {e.id for e in buffer.list(consolidated=False)} == {failed.id, other.id}
    assert consolidator.consolidate_facts() is None, "nothing new to learn"


def test_facts_consolidation_needs_a_facts_recipe(setup: dict[str, Any], fresh_base: Any) -> None:
    plain = Consolidator(
        setup["buffer"], setup["store"], Residency(fresh_base.model, setup["store"]), fresh_base.tokenizer
    )
    with pytest.raises(UserError, match="facts"):
        plain.consolidate_facts()


def test_the_facts_gate_keeps_no_memory_that_recalls_less_than_what_it_replaces() -> None:
    config = facts_recipe()
    worse, better = Scores(heldout_match=0.04), Scores(heldout_match=0.07)
    promoted, reason = decide(worse, better, config.margin, config.relevance_margin)
    assert not promoted and "heldout_match 0.04 < 0.07" in reason
    assert decide(better, worse, config.margin)[0]
    assert decide(Scores(heldout_match=0.07), Scores(heldout_match=0.07), config.margin)[0], "level is kept"
