"""Personal instances: name validation, skill resolution (personal first), and isolation of skills, episodes and
threads between instances, on the tiny base with scripted or tiny models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from langgraph.checkpoint.memory import InMemorySaver

from agent import Agent, Settings
from agent.backends.local import LocalChatModel
from agent.testing import ScriptedChatModel
from memory import HashingEmbedder, InMemoryBuffer, Trajectory
from memory.consolidate import ConsolidationConfig
from skills import Residency, SkillNotFoundError, SkillStore, UserError
from skills.instances import (
    InstanceAccessError,
    InvalidInstanceNameError,
    LayeredStore,
    PersonalView,
    instance_store,
    qualify,
    split_name,
    validate_instance_name,
)

Adapter = Callable[[str], Path]
HOSTILE = [
    "",
    "../x",
    "..",
    ".",
    "a/b",
    "a\\b",
    "/abs",
    ".hidden",
    "x" * 33,
    "Alice",
    "\u0430lice",  # Cyrillic а: looks like alice, is not
    "alice\n",
    "alice ",
    "al ice",
    "-alice",
    "alice-",
    "al\x00ice",
    "ａlice",  # fullwidth
    "alice\u200b",  # zero-width space
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_instance_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInstanceNameError):
        validate_instance_name(name)
    with pytest.raises(InvalidInstanceNameError):
        instance_store(tmp_path / "instances", name, base_fingerprint="f")
    with pytest.raises(InvalidInstanceNameError):
        Agent(instance=name, model=ScriptedChatModel(["x"]), buffer=InMemoryBuffer(HashingEmbedder()),
              checkpointer=InMemorySaver(), settings=Settings(home=tmp_path), tools=[])  # fmt: skip
    assert not (tmp_path / "instances").exists() or not any((tmp_path / "instances").iterdir())


@given(st.text(max_size=40))
def test_a_valid_instance_name_is_one_plain_folder_name(name: str) -> None:
    try:
        validate_instance_name(name)
    except InvalidInstanceNameError:
        return
    assert name.isascii() and "/" not in name and "\\" not in name and not name.startswith(".")
    assert Path(name).name == name and len(name) <= 32


def test_names_qualify_and_split() -> None:
    assert qualify("alice", "preference") == "alice/preference"
    assert split_name("alice/preference") == ("alice", "preference")
    assert split_name("preference") == (None, "preference")
    for bad in ("alice/../x", "../x/y", "alice/b/c", "Alice/x", "alice/"):
        with pytest.raises(UserError):
            split_name(bad)


@pytest.fixture
def layered(tmp_path: Path, store: SkillStore, adapter: Adapter) -> dict[str, Any]:
    """Shared skills 'pref' and 'common'; alice has her own 'pref' (a different adapter), bob has 'only-bob'."""
    store.create("pref", adapter("alpha"), kind="preference")
    store.create("common", adapter("beta"), kind="style")
    instances = tmp_path / "instances"
    instance_store(instances, "alice", base_fingerprint=store.base_fingerprint).create(
        "pref", adapter("gamma"), kind="preference"
    )
    instance_store(instances, "bob", base_fingerprint=store.base_fingerprint).create(
        "only-bob", adapter("beta"), kind="preference"
    )
    return {
        "shared": store,
        "instances": instances,
        "alice": LayeredStore(store, instances, instance="alice"),
        "bob": LayeredStore(store, instances, instance="bob"),
        "all": LayeredStore(store, instances),
    }


def test_plain_names_resolve_personal_first(layered: dict[str, Any]) -> None:
    alice, bob = layered["alice"], layered["bob"]
    assert alice.canonical("pref") == "alice/pref" and bob.canonical("pref") == "pref"
    assert alice.canonical("common") == "common" and alice.canonical("alice/pref") == "alice/pref"
    assert alice.get("pref").kind == "preference" and alice.read_adapter("pref").path.is_relative_to(
        layered["instances"] / "alice"
    )
    assert bob.read_adapter("pref").path.is_relative_to(layered["shared"].root)
    assert {m.name for m in alice.list()} == {"pref", "common"}
    assert {m.name for m in bob.list()} == {"pref", "common", "only-bob"}


def test_an_instance_can_never_read_another_instances_skills(layered: dict[str, Any]) -> None:
    alice, bob = layered["alice"], layered["bob"]
    for call in (
        lambda: bob.get("alice/pref"),
        lambda: bob.read_adapter("alice/pref"),
        lambda: bob.exists("alice/pref"),
        lambda: bob.canonical("alice/pref"),
        lambda: bob.personal("alice"),
        lambda: alice.read_adapter("bob/only-bob"),
    ):
        with pytest.raises(InstanceAccessError):
            call()
    with pytest.raises(SkillNotFoundError):
        alice.get("only-bob")  # a plain name never reaches into bob's folder


def test_an_instance_can_never_write_another_instances_or_shared_skills(
    layered: dict[str, Any], adapter: Adapter
) -> None:
    shared, instances = layered["shared"], layered["instances"]
    bob = PersonalView(instance_store(instances, "bob", base_fingerprint=shared.base_fingerprint), "bob")
    with pytest.raises(InstanceAccessError):
        bob.create("alice/stolen", adapter("alpha"), kind="preference")
    with pytest.raises(InstanceAccessError):
        bob.add_revision("alice/pref", adapter("alpha"))
    bob.create("common", adapter("alpha"), kind="style")  # a personal skill, shadowing the shared one for bob only
    assert shared.get("common").current == 1 and len(shared.history("common")) == 1
    assert (instances / "bob" / "common").is_dir() and not (instances / "alice" / "common").exists()
    assert layered["bob"].canonical("common") == "bob/common" and layered["alice"].canonical("common") == "common"


def test_one_residency_serves_every_instance_with_its_own_adapter(layered: dict[str, Any], fresh_base: Any) -> None:
    """The process-wide view: alice's `pref` and the shared `pref` are two different adapters on one base."""
    from skills.generation import generate

    residency = Residency(fresh_base.model, layered["all"], max_hot=2)  # type: ignore[arg-type]
    chat = [[{"role": "user", "content": "ping"}]]
    outputs = {}
    for name in ("pref", "alice/pref", "bob/only-bob"):
        residency.activate(name)
        outputs[name] = residency.model(**fresh_base.tokenizer("ping", return_tensors="pt")).logits
        generate(residency.model, fresh_base.tokenizer, chat, max_new_tokens=2)
    assert not torch.equal(outputs["pref"], outputs["alice/pref"])
    assert set(residency.hot()) <= {("pref", 1), ("alice/pref", 1), ("bob/only-bob", 1)}


def test_a_shared_and_a_personal_skill_compose_in_one_request(layered: dict[str, Any], fresh_base: Any) -> None:
    """The shared habit plus alice's own adapter, by qualified name: the sum changes the output, bob cannot name it."""
    from skills.compose import Composer, CompositionSpec

    residency = Residency(fresh_base.model, layered["alice"], max_hot=4)  # type: ignore[arg-type]
    composer = Composer(residency)
    ids = fresh_base.tokenizer("ping", return_tensors="pt")
    logits = {}
    for names in (("common",), ("alice/pref",), ("common", "alice/pref")):
        composer.activate(CompositionSpec.of(*names, method="cat"))
        logits[names] = residency.model(**ids).logits
    assert not torch.equal(logits[("common", "alice/pref")], logits[("common",)])
    assert not torch.equal(logits[("common", "alice/pref")], logits[("alice/pref",)])
    with pytest.raises(InstanceAccessError):
        Composer(Residency(fresh_base.model, layered["bob"], max_hot=4)).activate(  # type: ignore[arg-type]
            CompositionSpec.of("common", "alice/pref", method="cat")
        )
    with pytest.raises(ValueError):
        CompositionSpec.of("common", "alice/../pref")


def _agent(home: Path, instance: str | None, buffer: InMemoryBuffer, saver: InMemorySaver, store: SkillStore) -> Agent:
    return Agent(
        settings=Settings(home=home),
        instance=instance,
        model=ScriptedChatModel(lambda conversation: f"answer for {instance}"),
        store=store,
        buffer=buffer,
        checkpointer=saver,
        tools=[],
        retrieval_k=2,
    )


def test_episodes_feedback_and_threads_stay_with_their_instance(tmp_path: Path, store: SkillStore) -> None:
    buffer, saver = InMemoryBuffer(HashingEmbedder()), InMemorySaver()
    alice, bob, shared = (_agent(tmp_path, who, buffer, saver, store) for who in ("alice", "bob", None))
    a = alice.run("what is my favourite colour?", thread_id="t1", checker=lambda *_: True)
    b = bob.run("what is my favourite colour?", thread_id="t1", checker=lambda *_: True)
    alice.learn_from(Trajectory.demonstration("say hi", "hi alice"))
    assert a.trajectory.instance == "alice" and b.trajectory.instance == "bob"
    assert {t.task for t in buffer.list(instance="alice")} == {"what is my favourite colour?", "say hi"}
    assert [t.id for t in buffer.list(instance="bob")] == [b.run_id]
    # recall and worked examples only ever come from one's own episodes
    assert {task for task, _, _ in alice.recall("say hi", k=5)} == {"what is my favourite colour?", "say hi"}
    assert [answer for _, answer, _ in bob.recall("say hi", k=5)] == ["answer for bob"]
    assert shared.recall("colour", k=5) == []
    # feedback on another instance's run is refused, as if the run did not exist
    with pytest.raises(UserError, match="no run"):
        bob.feedback(a.run_id, "failure")
    assert buffer.get(a.run_id).outcome.status == "success"
    # the same thread id is a different conversation for each instance
    assert alice.thread("t1")[-1]["content"] == "answer for alice"
    assert bob.thread("t1")[-1]["content"] == "answer for bob"
    assert shared.thread("t1") == []


def test_an_instance_resolves_personal_skills_and_refuses_others(tmp_path: Path, layered: dict[str, Any]) -> None:
    buffer, saver = InMemoryBuffer(HashingEmbedder()), InMemorySaver()
    model = ScriptedChatModel(lambda conversation: "ok")
    alice = Agent(settings=Settings(home=tmp_path), instance="alice", model=model, store=layered["shared"],
                  buffer=buffer, checkpointer=saver, tools=[])  # fmt: skip
    result = alice.run("hi", skills=["pref"])
    assert [s.name for s in result.trajectory.skills] == ["alice/pref"] and model.skills_seen[-1] == [("alice/pref", 1)]
    assert [s.name for s in alice.run("hi", skills=["common"]).trajectory.skills] == ["common"]
    with pytest.raises(InstanceAccessError):
        alice.run("hi", skills=["bob/only-bob"])


def test_consolidation_of_an_instance_writes_only_its_own_store(tmp_path: Path, fresh_base: Any) -> None:
    """Alice's successes become alice's skill; the shared store and bob's folder stay untouched."""
    shared = SkillStore(tmp_path / "skills", base_fingerprint=fresh_base.fingerprint)
    buffer = InMemoryBuffer(HashingEmbedder())
    residency = Residency(fresh_base.model, LayeredStore(shared, tmp_path / "instances"), max_hot=2)  # type: ignore[arg-type]
    fast = ConsolidationConfig(min_episodes=4, replay=2, epochs=1.0, min_steps=2, max_steps=3, max_new_tokens=4)

    def agent(who: str) -> Agent:
        return Agent(settings=Settings(home=tmp_path), instance=who, base=fresh_base,
                     model=LocalChatModel(fresh_base, residency), store=shared, buffer=buffer,
                     checkpointer=InMemorySaver(), tools=[], consolidation=fast)  # fmt: skip

    alice, bob = agent("alice"), agent("bob")
    for i in range(5):
        alice.learn_from(Trajectory.demonstration(f"ping number {i}", f"pong {i}", system_prompt="You answer pings."))
    bob.learn_from(Trajectory.demonstration("bob's ping", "bob's pong", system_prompt="You answer pings."))
    reports = alice.consolidate(min_episodes=4)
    assert reports and all(r.skill and "/" not in r.skill for r in reports)
    assert shared.list() == [] and not (tmp_path / "instances" / "bob").exists()
    mine = alice.personal_store().list()
    assert [m.name for m in mine] == [r.skill for r in reports if r.promoted]
    assert buffer.list(instance="bob", consolidated=False)  # bob's episode was not used
    assert bob.consolidate(min_episodes=4) == []


def test_the_instance_benchmark_runs_on_the_tiny_base(fresh_base: Any, tmp_path: Path) -> None:
    from agent.bench.instances import run_instance_bench

    result = run_instance_bench(fresh_base, tmp_path, instances=6, requests=12, hot_users=2, max_hot=2, max_warm=1)
    assert result.instances == 6 and result.hot.count + result.warm.count + result.cold.count == 12
    assert result.cold.count > 0 and result.hot.count > 0  # both kinds of request happened
    assert result.full_model_bytes > result.bytes_per_instance > result.adapter_bytes > 0
    assert len(list((tmp_path / "instances").iterdir())) == 6
