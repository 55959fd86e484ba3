"""Negative demonstrations and the gate's relevance check (memory.negatives), on the tiny model and fakes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.evals.bfcl.data import BfclCase
from agent.evals.bfcl.harness import case_tools
from agent.prompt import system_prompt
from memory import HashingEmbedder, InMemoryBuffer, Trajectory
from memory.consolidate import ConsolidationConfig, Consolidator
from memory.dataset import split_holdout
from memory.facts import FactsConfig
from memory.gate import Scores, Trial, decide
from memory.negatives import REFUSAL, build_relevance, mismatches, negative_answers, offered_functions
from memory.retrain import recipe_retrainer, stored_recipe, training_examples
from skills import Residency, SkillStore
from tools import parse_tool_calls

EMBEDDER = HashingEmbedder()
WORDS = ["apple", "river", "planet", "violin", "copper", "tiger", "cloud", "marble", "pepper", "rocket"]


def tool_episode(task: str, name: str, required: list[str], description: str) -> Trajectory:
    """A demonstration whose system prompt offers one function, rendered exactly as the agent renders tools."""
    schema = {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {p: {"type": "string"} for p in required},
                "required": required,
            },
        },
    }
    call = json.dumps({"name": name, "arguments": {p: "x" for p in required}})
    return Trajectory.demonstration(task, f"<tool_call>{call}</tool_call>", system_prompt=system_prompt([schema]))


def distinct_episodes(n: int) -> list[Trajectory]:
    """n episodes, none of whose functions fits another's question: own names, parameters and words."""
    return [
        tool_episode(f"question {i} about {WORDS[i % 10]}{i}", f"tool_{i}", [f"param_{i}"], f"does thing{i} only")
        for i in range(n)
    ]


def similarity(a: str, b: str) -> float:
    va, vb = EMBEDDER.embed([a, b])
    return sum(x * y for x, y in zip(va, vb, strict=True))


def fits(question: Trajectory, tools_from: Trajectory, threshold: float) -> bool:
    """The definition of a fitting function, checked independently of the builder."""
    own, offered = offered_functions(question.system_prompt), offered_functions(tools_from.system_prompt)
    same_name = {f.name.replace(".", "_").lower() for f in own} & {f.name.replace(".", "_").lower() for f in offered}
    shared = set().union(*(f.required for f in own)) & set().union(*(f.required for f in offered))
    close = any(similarity(question.task, f.text) >= threshold for f in offered)
    return bool(same_name or shared or close)


# ------------------------------------------------------------------------------------------------ the builder


def test_the_system_prompt_reads_back_as_the_functions_offered() -> None:
    case = BfclCase(
        id="simple_python_1",
        category="simple_python",
        question=[[{"role": "user", "content": "Area of a circle of radius 2?"}]],
        functions=[
            {
                "name": "geometry.area_circle",
                "description": "Area of a circle.",
                "parameters": {"type": "dict", "properties": {"radius": {"type": "float"}}, "required": ["radius"]},
            },
            {"name": "noop", "description": "", "parameters": {"type": "dict", "properties": {}}},
        ],
        possible_answer=[{"geometry.area_circle": {"radius": [2.0]}}],
    )
    (area, noop) = offered_functions(system_prompt(case_tools(case).schemas()))
    assert (area.name, area.description, area.required) == ("geometry_area_circle", "Area of a circle.", {"radius"})
    assert (
        area.text == "geometry area circle: Area of a circle." and noop.text == "noop: noop" and noop.required == set()
    )
    assert offered_functions(None) == [] and offered_functions("You answer pings.\n{not json") == []


@pytest.mark.parametrize(
    ("question", "lender", "paired"),
    [
        # same function name (case and dots ignored), nothing else shared
        (("convert lira", "Money.Convert", ["amount"], "x"), ("bake a cake", "money_convert", ["flour"], "y"), False),
        # a shared required parameter
        (("convert lira", "convert", ["amount"], "x"), ("bake a cake", "bake", ["amount"], "y"), False),
        # the question reads like the function's description
        (("bake a cake tonight", "convert", ["amount"], "x"), ("z", "oven", ["flour"], "bake a cake tonight"), False),
        # nothing fits: paired
        (("convert lira", "convert", ["amount"], "exchange money"), ("bake a cake", "oven", ["flour"], "y"), True),
    ],
)
def test_a_question_is_never_paired_with_a_function_that_fits_it(
    question: tuple[Any, ...], lender: tuple[Any, ...], paired: bool
) -> None:
    q, other = tool_episode(*question), tool_episode(*lender)
    found = mismatches([q, other], 2, embedder=EMBEDDER, max_similarity=0.4)
    assert any(m.question.id == q.id for m in found) == paired
    assert all(not fits(m.question, m.tools_from, 0.4) for m in found)


episode_specs = st.lists(
    st.tuples(
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),  # the task's words
        st.sampled_from(["alpha", "beta", "Gamma", "gamma", "delta.x", "delta_x"]),  # the function's name
        st.lists(st.sampled_from(["x", "y", "z", "w"]), min_size=0, max_size=2, unique=True),  # required parameters
        st.lists(st.sampled_from(WORDS), min_size=0, max_size=4),  # the description's words
    ),
    min_size=2,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(specs=episode_specs, threshold=st.floats(-0.2, 0.9), seed=st.integers(0, 5), count=st.integers(1, 8))
def test_no_mismatch_ever_pairs_a_fitting_function(
    specs: list[tuple[list[str], str, list[str], list[str]]], threshold: float, seed: int, count: int
) -> None:
    eps = [tool_episode(" ".join(t), name, req, " ".join(d)) for t, name, req, d in specs]
    found = mismatches(eps, count, embedder=EMBEDDER, max_similarity=threshold, seed=seed)
    assert len(found) <= count
    assert len({m.question.id for m in found}) == len(found), "each question once"
    for m in found:
        assert m.question.id != m.tools_from.id
        assert not fits(m.question, m.tools_from, threshold), (m.question.task, m.tools_from.system_prompt)
        assert m.chat == [
            {"role": "system", "content": m.tools_from.system_prompt},
            {"role": "user", "content": m.question.task},
        ], "the other episode's tools, exactly as the agent rendered them"
    again = mismatches(eps, count, embedder=EMBEDDER, max_similarity=threshold, seed=seed)
    assert [(m.question.id, m.tools_from.id) for m in again] == [(m.question.id, m.tools_from.id) for m in found]


def test_pairing_is_seeded_and_episodes_without_tools_lend_only_their_question() -> None:
    eps = distinct_episodes(12)
    plain = Trajectory.demonstration("question about nothing", "ok", system_prompt="You answer pings.")
    a = mismatches([*eps, plain], 13, embedder=EMBEDDER, max_similarity=0.4, seed=1)
    b = mismatches([*eps, plain], 13, embedder=EMBEDDER, max_similarity=0.4, seed=2)
    assert len(a) == len(b) == 13, "every question finds a partner"
    assert [(m.question.id, m.tools_from.id) for m in a] != [(m.question.id, m.tools_from.id) for m in b]
    assert all(m.tools_from.id != plain.id for m in a + b), "a prompt with no functions lends no tools"


# ------------------------------------------------------------------------------------------------ share, pools, target


def config(**overrides: Any) -> ConsolidationConfig:
    return ConsolidationConfig(**({"relevance_min": 2, "negative_target": "refusal"} | overrides))


def ask_nothing(chats: list[Any]) -> list[str]:
    raise AssertionError("the refusal target asks the base nothing")


@pytest.mark.parametrize(("share", "n_train"), [(0.15, 20), (0.5, 9), (1.0, 7), (0.0, 20)])
def test_the_negative_share_is_honoured(share: float, n_train: int) -> None:
    train = distinct_episodes(n_train)
    relevance = build_relevance(train, [], config(negative_share=share), EMBEDDER, ask_nothing, bool)
    assert len(relevance.examples) == math.ceil(share * n_train)
    assert all(ex.messages[-1].content == REFUSAL for ex in relevance.examples)


def test_train_and_gate_pools_are_disjoint() -> None:
    train, holdout = split_holdout(distinct_episodes(20), 0.3)
    relevance = build_relevance(train, holdout, config(negative_share=1.0), EMBEDDER, ask_nothing, bool)
    train_ids, held_ids = {e.id for e in train}, {e.id for e in holdout}
    assert len(relevance.examples) == len(train) and len(relevance.gate) == len(holdout) == 6
    for example in relevance.examples:
        _, question, lender = example.source_id.split(":")
        assert {question, lender} <= train_ids, "negatives come from trained episodes only"
    for case in relevance.gate:
        assert {case.question.id, case.tools_from.id} <= held_ids, "the gate asks held-out episodes only"
    assert relevance.gate_chats == [case.chat for case in relevance.gate] and not relevance.notes


def test_too_few_held_out_episodes_skip_the_relevance_check_and_say_so() -> None:
    few = distinct_episodes(2)
    train, holdout = split_holdout(few, 0.2)  # too few to split: train and held out are the same episodes
    relevance = build_relevance(train, holdout, config(), EMBEDDER, ask_nothing, bool)
    assert relevance.gate == [] and "too few episodes to hold any out" in relevance.notes[-1]
    train, holdout = split_holdout(distinct_episodes(10), 0.2)  # 2 held out: 2 cases, fewer than relevance_min
    relevance = build_relevance(train, holdout, config(relevance_min=4), EMBEDDER, ask_nothing, bool)
    assert relevance.gate == [] and "fewer than relevance_min=4" in relevance.notes[-1]


def test_the_base_target_is_the_bases_answer_unless_it_calls_a_tool() -> None:
    cases = mismatches(distinct_episodes(3), 3, embedder=EMBEDDER, max_similarity=0.4)
    asked: list[Any] = []

    def base(chats: list[Any]) -> list[str]:
        asked.extend(chats)
        return ["A plain answer.", '<tool_call>{"name": "tool_1", "arguments": {}}</tool_call>', "  "]

    answers = negative_answers(cases, "base", base, lambda text: bool(parse_tool_calls(text).calls))
    assert answers == ["A plain answer.", REFUSAL, REFUSAL]
    assert asked == [[{"role": "user", "content": c.question.task}] for c in cases], "asked with no tools offered"
    assert negative_answers(cases, "refusal", ask_nothing, bool) == [REFUSAL] * 3


def test_episodes_without_tools_build_nothing_and_say_why() -> None:
    plain = [Trajectory.demonstration(f"ping {i}", "pong", system_prompt="You answer pings.") for i in range(8)]
    relevance = build_relevance(plain[:6], plain[6:], config(), EMBEDDER, ask_nothing, bool)
    assert relevance.examples == [] and relevance.gate == [] and "no episode offers tools" in relevance.notes[0]


def test_the_facts_recipe_builds_no_negatives() -> None:
    train = distinct_episodes(10)
    relevance = build_relevance(train, train[:3], config(facts=FactsConfig()), EMBEDDER, ask_nothing, bool)
    assert relevance.examples == [] and relevance.gate == [] and relevance.notes == []


# ------------------------------------------------------------------------------------------------ the gate


@pytest.mark.parametrize(
    ("candidate", "current", "relevance_margin", "promoted"),
    [
        (0.30, 0.10, None, False),  # rises by more than the margin
        (0.12, 0.10, None, True),  # within the margin
        (0.30, 0.10, 0.25, True),  # within a wider relevance margin
        (0.00, 0.40, None, True),  # falls
        (None, 0.10, None, True),  # not measured: nothing to compare
    ],
)
def test_the_gate_refuses_a_rise_in_mismatched_calls(
    candidate: float | None, current: float | None, relevance_margin: float | None, promoted: bool
) -> None:
    ok, reason = decide(
        Scores(heldout_match=1.0, mismatched_call_rate=candidate),
        Scores(heldout_match=1.0, mismatched_call_rate=current),
        0.05,
        relevance_margin,
    )
    assert ok == promoted and (promoted or "mismatched_call_rate" in reason), reason


@pytest.fixture
def consolidation(tmp_path: Path, fresh_base: Any) -> dict[str, Any]:
    store = SkillStore(tmp_path / "skills", base_fingerprint=fresh_base.fingerprint)
    buffer = InMemoryBuffer(HashingEmbedder())
    residency = Residency(fresh_base.model, store, max_hot=2)
    return {
        "store": store,
        "buffer": buffer,
        "residency": residency,
        "tokenizer": fresh_base.tokenizer,
        "tmp": tmp_path,
    }


FAST = ConsolidationConfig(
    min_episodes=4, replay=2, epochs=1.0, min_steps=2, max_steps=3, max_new_tokens=4, holdout_fraction=0.3,
    negative_share=0.25, relevance_min=2,
)  # fmt: skip


def consolidator(setup: dict[str, Any], **kwargs: Any) -> Consolidator:
    return Consolidator(
        setup["buffer"],
        setup["store"],
        setup["residency"],
        setup["tokenizer"],
        config=kwargs.pop("config", FAST),
        reports_dir=setup["tmp"] / "reports",
        progress=False,
        is_tool_call=lambda text: bool(parse_tool_calls(text).calls),
        **kwargs,
    )


def test_a_consolidation_trains_on_negatives_and_measures_mismatched_calls(consolidation: dict[str, Any]) -> None:
    consolidation["buffer"].add_many(distinct_episodes(16))  # 11 trained + 5 held out
    (report,) = consolidator(consolidation).run()
    assert report.promoted, report.reason
    assert (report.n_train, report.n_holdout) == (11, 5)
    assert report.n_negatives == math.ceil(0.25 * 11) and report.n_mismatched == 5 and not report.notes
    assert report.candidate.mismatched_call_rate is not None and report.current.mismatched_call_rate is not None
    saved = json.loads(Path(str(report.report_path)).read_text())
    assert saved["n_negatives"] == report.n_negatives and "mismatched_call_rate" in saved["candidate"]
    metrics = consolidation["store"].revision(report.skill).evaluation.metrics
    assert {"candidate_mismatched_call_rate", "current_mismatched_call_rate"} <= set(metrics)
    assert metrics["candidate_mismatched_call_rate"] == report.candidate.mismatched_call_rate


def test_the_gate_rejects_a_candidate_that_calls_more_often_on_held_out_mismatches(
    consolidation: dict[str, Any],
) -> None:
    consolidation["buffer"].add_many(distinct_episodes(16))
    seen: list[Trial] = []

    def leaky(model: Any, trial: Trial) -> Scores:  # first the candidate, then what it would replace (the base)
        seen.append(trial)
        return Scores(heldout_match=1.0, mismatched_call_rate=0.6 if len(seen) == 1 else 0.0)

    (report,) = consolidator(consolidation, scorer=leaky).run()
    assert not report.promoted and "mismatched_call_rate 0.60 > 0.00" in report.reason
    assert len(seen[0].mismatched_chats) == 5 and seen[0].mismatched_chats == seen[1].mismatched_chats
    assert consolidation["store"].list() == [], "a new skill no better than the base is not created"


def test_with_too_few_episodes_the_report_says_the_relevance_check_was_skipped(consolidation: dict[str, Any]) -> None:
    consolidation["buffer"].add_many(distinct_episodes(4))  # 1 held out: no held-out pair exists
    (report,) = consolidator(consolidation).run()
    assert report.n_mismatched == 0 and report.candidate.mismatched_call_rate is None
    assert any("relevance check skipped" in note for note in report.notes)


def test_a_rebuild_trains_the_negatives_of_the_recipe_it_was_made_with(consolidation: dict[str, Any]) -> None:
    eps = distinct_episodes(12)
    recipe = FAST.model_copy(update={"negative_target": "refusal"})
    examples = training_examples(recipe, eps, consolidation["residency"], consolidation["tokenizer"], EMBEDDER)
    negatives = [e for e in examples if e.source_id.startswith("negative:")]
    assert len(negatives) == math.ceil(0.25 * 12), "paired among all the remaining episodes (nothing held out)"
    assert all(e.messages[-1].content == REFUSAL for e in negatives)
    # through the retrainer, with the recipe the revision stored
    consolidation["buffer"].add_many(eps)
    (report,) = consolidator(consolidation, config=recipe).run()
    retrain = recipe_retrainer(consolidation["store"], consolidation["residency"], consolidation["tokenizer"])
    result = retrain(report.skill, None, eps, consolidation["tmp"] / "rebuild")
    assert result.examples == len(examples)
    # a recipe stored before negatives existed made none, and its rebuild makes none
    legacy = ConsolidationConfig().model_dump(exclude={"negative_share"})
    assert stored_recipe(legacy).negative_share == 0.0 and stored_recipe(None) == ConsolidationConfig()
    assert stored_recipe(recipe.model_dump()).negative_share == 0.25
