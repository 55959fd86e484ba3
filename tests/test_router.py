"""The router on a store of tiny-model skills with a hashing (or counting) embedder: choice, pins, centroids, the
index's invalidation, what a run records, and `habitloop route --json`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import ValidationError
from typer.testing import CliRunner

from agent import Agent, Settings
from agent.router import Router, RoutingIndex
from agent.testing import ScriptedChatModel
from memory import HashingEmbedder, InMemoryBuffer, routing_vector
from skills import SkillNotFoundError, SkillStore, UserError
from skills.manifest import RoutingVector

DESCRIPTIONS = {
    "calculator": "add and multiply numbers with the calculator tool",
    "files": "write notes into files in the workspace",
    "french": "translate english sentences into french",
    "summaries": "summarize long documents in three bullet points",
}


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, remembering every call (to check that routing embeds once per task)."""

    def __init__(self, dimension: int = 256) -> None:
        super().__init__(dimension)
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return super().embed(texts)


def cosine(embedder: HashingEmbedder, a: str, b: str) -> float:
    x, y = embedder.embed([a, b])
    return sum(p * q for p, q in zip(x, y, strict=True))


@pytest.fixture
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture
def skills(store: SkillStore, adapter: Callable[[str], Path]) -> SkillStore:
    for name, description in DESCRIPTIONS.items():
        store.create(name, adapter("alpha"), kind="domain", description=description)
    return store


def test_top_k_and_threshold(skills: SkillStore, embedder: CountingEmbedder) -> None:
    task = "please multiply these numbers with the calculator"
    decision = Router(skills, embedder, top_k=2, threshold=0.2).decide(task)
    assert [c.name for c in decision.choices] == ["calculator"], "only one skill clears the threshold"
    (choice,) = decision.choices
    assert choice.reason == "similar" and choice.threshold == 0.2 and choice.centroid_score is None
    assert choice.score == pytest.approx(cosine(embedder, task, DESCRIPTIONS["calculator"]), abs=1e-4)
    assert decision.candidates[0].name == "calculator" and decision.candidates[0].chosen
    assert decision.skills_indexed == 4

    # a threshold below every score: top_k caps the choice, best first
    everything = Router(skills, embedder, top_k=3, threshold=-1.0).decide(task, floor=-1.0)
    scores = sorted(((c.score, c.name) for c in everything.candidates), key=lambda p: (-p[0], p[1]))
    assert [c.name for c in everything.choices] == [name for _, name in scores[:3]]
    assert len(everything.candidates) == 4 and sum(c.chosen for c in everything.candidates) == 3
    # a threshold above every score chooses nothing; top_k 0 too
    assert Router(skills, embedder, threshold=0.99).route(task) == []
    assert Router(skills, embedder, top_k=0, threshold=-1.0).route(task) == []


def test_pinned_skills_are_kept_below_the_threshold(skills: SkillStore, embedder: CountingEmbedder) -> None:
    router = Router(skills, embedder, top_k=1, threshold=0.2, pinned=["summaries"])
    choices = router.route("multiply numbers with the calculator")
    assert [(c.name, c.reason) for c in choices] == [("summaries", "pinned"), ("calculator", "similar")]
    assert choices[0].score < 0.2 and choices[0].threshold == 0.2, "recorded with its real score"
    # a pinned skill that would also be similar is listed once, as pinned
    again = router.decide("multiply numbers with the calculator", pinned=["calculator"])
    assert [(c.name, c.reason) for c in again.choices] == [("calculator", "pinned")]
    with pytest.raises(SkillNotFoundError, match="pinned skill 'nope'"):
        router.decide("anything", pinned=["nope"])
    with pytest.raises(SkillNotFoundError, match="pinned skill 'gone'"):
        Router(skills, embedder, pinned=["gone"]).route("anything")


def test_no_skills_route_to_nothing_without_embedding(store: SkillStore, embedder: CountingEmbedder) -> None:
    decision = Router(store, embedder).decide("multiply two numbers")
    assert decision.choices == [] and decision.candidates == [] and decision.skills_indexed == 0
    assert embedder.calls == [], "an empty store needs no embedding"


def test_bad_options_are_the_callers_mistake(skills: SkillStore, embedder: CountingEmbedder) -> None:
    with pytest.raises(UserError, match="threshold"):
        Router(skills, embedder, threshold=2.0)
    with pytest.raises(UserError, match="top_k"):
        Router(skills, embedder).decide("x", top_k=-1)
    with pytest.raises(UserError, match="empty"):
        Router(skills, embedder).route("  ")


def test_a_skill_without_description_routes_by_its_name(
    store: SkillStore, adapter: Callable[[str], Path], embedder: CountingEmbedder
) -> None:
    store.create("weather-report", adapter("alpha"), kind="domain")
    (choice,) = Router(store, embedder, threshold=0.3).route("give me the weather report")
    assert choice.name == "weather-report" and choice.centroid_score is None


def test_centroid_routes_what_the_description_misses(
    store: SkillStore, adapter: Callable[[str], Path], embedder: CountingEmbedder
) -> None:
    prompts = ["ping number 1", "ping number 2", "ping number 3"]
    store.create(
        "learned",
        adapter("alpha"),
        kind="memory",
        description="learned from successful episodes",
        routing=routing_vector(embedder, prompts),
    )
    store.create("other", adapter("beta"), kind="memory", description="write poems about autumn")
    decision = Router(store, embedder, threshold=0.3).decide("ping number 7")
    (choice,) = decision.choices
    assert choice.name == "learned"
    assert choice.centroid_score is not None and choice.centroid_score > 0.3 > choice.description_score
    assert choice.score == max(choice.centroid_score, choice.description_score), "the max of the two"


def test_a_centroid_from_another_embedder_is_ignored(
    store: SkillStore, adapter: Callable[[str], Path], embedder: CountingEmbedder
) -> None:
    other = HashingEmbedder(128)  # another vector space (another name), and another dimension
    store.create("learned", adapter("alpha"), kind="memory", routing=routing_vector(other, ["ping number 1"]))
    decision = Router(store, embedder, threshold=-1.0).decide("ping number 1")
    assert decision.choices[0].centroid_score is None


def test_routing_embeds_once_per_task(skills: SkillStore, embedder: CountingEmbedder) -> None:
    router = Router(skills, embedder)
    router.route("multiply numbers")
    assert embedder.calls == [list(DESCRIPTIONS.values()), ["multiply numbers"]], "descriptions in one batch, once"
    router.route("write a note")
    router.route("translate this")
    assert embedder.calls[2:] == [["write a note"], ["translate this"]], "descriptions are not embedded again"
    assert router.index.builds == 1


def test_index_follows_the_store(
    skills: SkillStore, adapter: Callable[[str], Path], embedder: CountingEmbedder
) -> None:
    router = Router(skills, embedder, threshold=-1.0, top_k=10)
    router.route("anything")
    assert router.index.refresh() is False, "nothing changed: no rebuild"
    builds = router.index.builds

    skills.create("poems", adapter("beta"), kind="style", description="write poems")
    assert "poems" in {c.name for c in router.route("write poems")}
    assert router.index.builds == builds + 1
    assert embedder.calls[-2] == ["write poems"], "only the new skill's description is embedded"

    revision = skills.add_revision("poems", adapter("gamma")).number  # promoted: the index moves to it
    assert {c.name: c.revision for c in router.route("poems")}["poems"] == revision == 2
    skills.add_revision("poems", adapter("alpha"), promote=False)  # rejected: current stays 2
    assert {c.name: c.revision for c in router.route("poems")}["poems"] == 2
    skills.promote("poems", 3)
    assert {c.name: c.revision for c in router.route("poems")}["poems"] == 3
    skills.rollback("poems", 1)
    assert {c.name: c.revision for c in router.route("poems")}["poems"] == 1

    skills.delete("calculator")
    assert "calculator" not in {c.name for c in router.route("add numbers with the calculator")}
    assert router.index.names == sorted(["files", "french", "summaries", "poems"])


def test_another_processes_writes_are_seen(
    skills: SkillStore, adapter: Callable[[str], Path], embedder: CountingEmbedder
) -> None:
    router = Router(skills, embedder, threshold=-1.0, top_k=10)
    router.route("anything")
    elsewhere = SkillStore(skills.root, base_fingerprint=skills.base_fingerprint)  # another handle, same folder
    generation = skills.generation()
    elsewhere.add_revision("files", adapter("beta"))
    assert skills.generation() == generation + 1
    assert {c.name: c.revision for c in router.route("files")}["files"] == 2


def test_index_from_vectors_scores_with_one_product() -> None:
    embedder = HashingEmbedder(8)
    descriptions = np.eye(8)[:3] * 5.0  # normalized by the index
    centroids = [None, np.eye(8)[5], None]
    index = RoutingIndex.from_vectors(embedder, ["a", "b", "c"], [1, 1, 2], descriptions, centroids)
    combined, described, centred = index.scores(np.eye(8, dtype=np.float32)[5])
    assert combined.tolist() == [0.0, 1.0, 0.0] and described.tolist() == [0.0, 0.0, 0.0]
    assert math.isnan(centred[0]) and centred[1] == 1.0

    class Fixed(HashingEmbedder):  # every task lands on axis 5
        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            return [np.eye(8)[5].tolist() for _ in texts]

    decision = Router(None, Fixed(8), index=index, threshold=0.5).decide("x")
    assert [(c.name, c.revision, c.score, c.centroid_score) for c in decision.choices] == [("b", 1, 1.0, 1.0)]
    with pytest.raises(UserError, match="store or a RoutingIndex"):
        Router(None, embedder)


# ------------------------------------------------------------------------------------------------ routing vectors


def test_routing_vector_is_the_normalized_mean_and_folds_in_its_parent() -> None:
    embedder = HashingEmbedder(64)
    vectors = np.asarray(embedder.embed(["ping one", "pong two"]))
    first = routing_vector(embedder, ["ping one", "pong two"])
    assert first is not None and first.n_prompts == 2 and first.embedder == "hashing-64"
    expected = vectors.sum(0) / np.linalg.norm(vectors.sum(0))
    assert np.allclose(first.vector, expected, atol=1e-6)
    second = routing_vector(embedder, ["third prompt"], parent=first)
    assert second is not None and second.n_prompts == 3
    total = vectors.sum(0) / np.linalg.norm(vectors.sum(0)) * 2 + np.asarray(embedder.embed(["third prompt"])[0])
    assert np.allclose(second.vector, total / np.linalg.norm(total), atol=1e-5)
    assert routing_vector(embedder, []) is None
    assert routing_vector(HashingEmbedder(32), ["x"], parent=first).n_prompts == 1, "another space: parent dropped"


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=6))
def test_routing_vectors_are_unit_length_and_survive_json(prompts: list[str]) -> None:
    vector = routing_vector(HashingEmbedder(32), prompts)
    if vector is None:  # prompts that cancel out exactly have no direction
        return
    assert math.isclose(math.sqrt(sum(x * x for x in vector.vector)), 1.0, abs_tol=1e-4)
    assert RoutingVector.model_validate_json(vector.model_dump_json()) == vector


def test_routing_vector_refuses_bad_vectors() -> None:
    with pytest.raises(ValidationError, match="unit length"):
        RoutingVector(embedder="e", vector=(1.0, 1.0), n_prompts=1)
    with pytest.raises(ValidationError, match="NaN"):
        RoutingVector(embedder="e", vector=(float("nan"), 1.0), n_prompts=1)


def test_the_centroid_is_stored_with_the_revision_and_exported(
    store: SkillStore, adapter: Callable[[str], Path], tmp_path: Path
) -> None:
    routing = routing_vector(HashingEmbedder(), ["a prompt"])
    store.create("s", adapter("alpha"), kind="memory", routing=routing)
    assert store.revision("s").routing == routing
    archive = store.export("s", tmp_path / "s.tar.gz")
    other = SkillStore(tmp_path / "other", base_fingerprint=store.base_fingerprint)
    other.import_archive(archive)
    assert other.revision("s").routing == routing


# ------------------------------------------------------------------------------------------------ the agent


def make_agent(tmp_path: Path, store: SkillStore, replies: list[str], **kwargs: Any) -> Agent:
    return Agent(
        settings=Settings(home=tmp_path / "home"),
        model=ScriptedChatModel(replies),
        store=store,
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder(256)),
        retrieval_k=0,
        **kwargs,
    )


def test_a_routed_run_records_score_and_threshold(skills: SkillStore, tmp_path: Path) -> None:
    router = Router(skills, CountingEmbedder(), threshold=0.2)
    agent = make_agent(tmp_path, skills, ["391", "ok", "fine"], router=router)
    result = agent.run("multiply numbers with the calculator")
    (use,) = result.trajectory.skills
    assert (use.name, use.revision, use.reason, use.threshold) == ("calculator", 1, "similar", 0.2)
    assert use.score is not None and use.score >= 0.2
    assert agent.model.skills_seen[-1] == [("calculator", 1)], "the model ran with the routed skill"
    assert agent.buffer.get(result.run_id).skills == [use], "the buffer keeps the reason too"

    requested = agent.run("multiply numbers with the calculator", skills=["files"]).trajectory.skills
    assert [(u.name, u.reason, u.score) for u in requested] == [("files", "requested", None)]
    assert agent.run("multiply numbers", route=False).trajectory.skills == []


def test_routing_is_off_by_default(skills: SkillStore, tmp_path: Path) -> None:
    agent = make_agent(tmp_path, skills, ["fine", "fine"])
    assert not agent.auto_route
    assert agent.run("multiply numbers with the calculator").trajectory.skills == []
    # on per call: the agent builds its router with the buffer's embedder
    routed = agent.run("multiply numbers with the calculator", route=True).trajectory.skills
    assert routed[0].name == "calculator" and routed[0].reason == "similar"
    assert agent.router.embedder is agent.buffer.embedder  # type: ignore[attr-defined]


def test_settings_turn_routing_on(skills: SkillStore, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", route=True, route_top_k=1, route_pinned=["summaries"])
    agent = Agent(
        settings=settings,
        model=ScriptedChatModel(["fine"]),
        store=skills,
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder(256)),
        retrieval_k=0,
    )
    uses = agent.run("translate english sentences into french").trajectory.skills
    assert [(u.name, u.reason) for u in uses] == [("summaries", "pinned"), ("french", "similar")]
    assert agent.route("translate english into french").choices[1].name == "french"


# ------------------------------------------------------------------------------------------------ the CLI


def test_cli_route_json(skills: SkillStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.cli import resources as cli_resources
    from agent.cli.app import app

    monkeypatch.setattr(cli_resources, "embedder", lambda: HashingEmbedder(256))
    home = skills.root.parent  # the store fixture lives in HOME/skills
    runner = CliRunner()
    env = {"HABITLOOP_HOME": str(home)}
    args = ["route", "multiply numbers with the calculator", "--threshold", "0.2", "--pin", "files", "--json"]
    result = runner.invoke(app, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [(c["name"], c["reason"]) for c in payload["choices"]] == [("files", "pinned"), ("calculator", "similar")]
    assert payload["threshold"] == 0.2 and payload["top_k"] == 2 and payload["skills_indexed"] == 4
    assert payload["candidates"][0]["name"] == "calculator" and payload["candidates"][0]["chosen"]
    assert {"embed_ms", "score_ms", "embedder"} <= set(payload)
    table = runner.invoke(app, ["route", "multiply numbers with the calculator"], env=env, catch_exceptions=False)
    assert table.exit_code == 0 and "calculator" in table.output and "similar" in table.output


# ------------------------------------------------------------------------------------------------ consolidation


def test_consolidation_stores_the_centroid_of_the_trained_tasks(tmp_path: Path, fresh_base: Any) -> None:
    from memory import Trajectory
    from memory.consolidate import ConsolidationConfig, Consolidator
    from memory.trajectory import SkillUse
    from skills import Residency

    fast = ConsolidationConfig(min_episodes=4, replay=2, epochs=1.0, min_steps=2, max_steps=3, max_new_tokens=4)
    store = SkillStore(tmp_path / "skills", base_fingerprint=fresh_base.fingerprint)
    embedder = HashingEmbedder(256)
    buffer = InMemoryBuffer(embedder)  # the consolidator embeds with the buffer's embedder by default
    residency = Residency(fresh_base.model, store, max_hot=2)
    consolidator = Consolidator(buffer, store, residency, fresh_base.tokenizer, config=fast, progress=False)

    def pings(offset: int, skill: str | None = None) -> list[Trajectory]:
        out = []
        for i in range(offset, offset + 6):
            t = Trajectory.demonstration(f"ping number {i}", f"pong {i}", system_prompt="You answer pings.")
            out.append(t.model_copy(update={"skills": [SkillUse(name=skill, revision=1)]}) if skill else t)
        return out

    first_eps = pings(0)
    buffer.add_many(first_eps)
    (first,) = consolidator.run()
    record = store.revision(first.skill)
    held = set(record.evaluation.details["holdout"])
    trained = [e.task for e in first_eps if e.id not in held]
    assert record.routing is not None and record.routing.n_prompts == first.n_train == len(trained)
    expected = routing_vector(embedder, trained)
    assert expected is not None and np.allclose(record.routing.vector, expected.vector, atol=2e-6)

    buffer.add_many(pings(100, skill=first.skill))
    (second,) = consolidator.run(first.skill)
    again = store.revision(first.skill, second.revision)
    assert again.routing is not None and again.routing.n_prompts == first.n_train + second.n_train

    # the router finds it by its prompts although its description is generic
    (choice,) = Router(store, embedder, threshold=0.3).route("ping number 42")
    assert choice.name == first.skill and choice.revision == second.revision
    assert choice.centroid_score is not None and choice.centroid_score > choice.description_score


# ------------------------------------------------------------------------------------------------ the benchmark


def test_routing_benchmark_reports_its_figures() -> None:
    from agent.bench.route import measure_index_refresh, measure_routing

    figures = measure_routing(HashingEmbedder(32), skills=300, repeats=3, warmup=1)
    assert set(figures) == {"routing_latency_300_ms", "routing_embed_ms", "routing_score_300_ms"}
    assert all(len(f.samples) == 3 and f.unit == "ms" for f in figures.values())
    (refresh,) = measure_index_refresh(skills=20, repeats=2).values()  # raises if the index missed a change
    assert len(refresh.samples) == 2
