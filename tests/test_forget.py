"""Forgetting on the tiny base: episodes leave the buffer and the weights; revisions that held them are rebuilt from
the last clean one, deleted from disk, tombstoned in history, dropped from the residency."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

import agent.cli.forget as cli_forget
from agent import Agent, Settings
from agent.backends.local import LocalChatModel
from agent.cli.app import app
from memory import HashingEmbedder, InMemoryBuffer, Trajectory
from memory.consolidate import ConsolidationConfig
from memory.forget import ForgetReport
from skills import Evaluation, Provenance, Residency, SkillStore, UserError
from skills.instances import LayeredStore
from skills.residency import adapter_name

Adapter = Callable[[str], Path]
FAST = ConsolidationConfig(min_episodes=2, replay=0, epochs=1.0, min_steps=2, max_steps=2, max_new_tokens=4)
SECRET = "my locker code is 4711"


def episode(i: int, instance: str | None = "alice", task: str | None = None) -> Trajectory:
    t = Trajectory.demonstration(task or f"ping number {i}", f"pong {i}", system_prompt="You answer pings.")
    return t.model_copy(update={"id": f"{instance or 'shared'}-e{i}", "instance": instance})


class Killed(BaseException):
    """What a kill at a crash point leaves: nothing after it ran, the journal on disk."""


def kill_forget_at(monkeypatch: Any, point: str) -> None:
    """Make the forget die at `point` (a `memory.consolidate.crash_point` name), as kill -9 would."""
    import memory.forget

    def die(name: str) -> None:
        if name == point:
            raise Killed

    monkeypatch.setattr(memory.forget, "crash_point", die)


@pytest.fixture
def world(tmp_path: Path, fresh_base: Any, adapter: Adapter) -> dict[str, Any]:
    """alice's skill `memory` with revisions 1 <- 2 <- 3 trained on episodes (0, 1), (2, 3), (4, 5); episode 2 holds
    the secret; bob has an episode with the same text."""
    shared = SkillStore(tmp_path / "skills", base_fingerprint=fresh_base.fingerprint)
    buffer = InMemoryBuffer(HashingEmbedder())
    residency = Residency(fresh_base.model, LayeredStore(shared, tmp_path / "instances"), max_hot=2)  # type: ignore[arg-type]

    def make(who: str) -> Agent:
        return Agent(settings=Settings(home=tmp_path), instance=who, base=fresh_base,
                     model=LocalChatModel(fresh_base, residency), store=shared, buffer=buffer,
                     checkpointer=InMemorySaver(), tools=[], max_new_tokens=8, max_steps=1)  # fmt: skip

    alice = make("alice")
    eps = [episode(i, task=f"remember: {SECRET}" if i == 2 else None) for i in range(6)]
    buffer.add_many([*eps, episode(2, instance="bob", task=f"remember: {SECRET}")])
    personal = alice.personal_store()
    recipe = Evaluation(details={"config": FAST.model_dump()})
    for number, (which, ids) in enumerate([("alpha", eps[0:2]), ("beta", eps[2:4]), ("gamma", eps[4:6])], 1):
        provenance = Provenance(episode_ids=tuple(e.id for e in ids))
        if number == 1:
            described = f"Learned from 2 successful episodes, such as 'ping number 0'; {'remember: ' + SECRET!r}."
            personal.create("memory", adapter(which), kind="memory", description=described, provenance=provenance,
                            evaluation=recipe)  # fmt: skip
        else:
            personal.add_revision("memory", adapter(which), provenance=provenance, evaluation=recipe)
        buffer.mark_consolidated([e.id for e in ids], into=f"alice/memory@{number}")
    for number in (2, 3, 1):  # 2 and 3 resident: 3 and 1 hot, 2 warm
        residency.load("alice/memory", number)
    return {"alice": alice, "bob": make("bob"), "buffer": buffer, "store": personal, "residency": residency,
            "eps": eps, "tmp": tmp_path}  # fmt: skip


def test_forgetting_an_episode_of_revision_2_rebuilds_from_revision_1(world: dict[str, Any]) -> None:
    alice, buffer, store, residency = world["alice"], world["buffer"], world["store"], world["residency"]
    assert residency.state("alice/memory", 2) == "warm" and residency.state("alice/memory", 3) == "hot"
    planned_description = store.get("memory").description

    report = alice.forget(["alice-e2"], reason="user asked")
    (skill,) = report.skills
    assert (skill.action, skill.revisions_deleted, skill.new_revision) == ("rebuild", [2, 3], 4)
    assert skill.retrained_on == ["alice-e3", "alice-e4", "alice-e5"] and skill.missing == []
    manifest = store.get("memory")
    assert manifest.current == 4 and manifest.revision_numbers() == [1, 4] and manifest.forgotten() == [2, 3]
    record = store.revision("memory", 4)
    assert record.parent == 1 and set(record.provenance.episode_ids) == {"alice-e3", "alice-e4", "alice-e5"}
    assert record.provenance.training["init_from"].endswith("revs/1"), "retrained from the last clean revision"
    # gone from disk, tombstoned, without content
    revs = store.skill_dir("memory") / "revs"
    assert sorted(p.name for p in revs.iterdir()) == ["1", "4"]
    history = store.history("memory")
    assert [(h.number, h.status) for h in history] == [(1, "promoted"), (2, "forgotten"), (3, "forgotten"),
                                                       (4, "promoted")]  # fmt: skip
    assert all(h.tombstone and h.tombstone.note == "user asked" for h in history if h.status == "forgotten")
    assert "4711" in planned_description, "the description quoted the episode"
    assert "4711" not in (store.skill_dir("memory") / "manifest.json").read_text(), "nothing of it in the manifest"
    assert "ping number 3" in manifest.description, "described again from the remaining episodes"
    # the residency holds neither, hot nor warm
    assert residency.state("alice/memory", 2) == "cold" and residency.state("alice/memory", 3) == "cold"
    loaded = set(residency.model.peft_config)
    assert not loaded & {adapter_name("alice/memory", 2), adapter_name("alice/memory", 3)}
    # the buffer: the episode is gone, the others are marked into the rebuild
    assert [e.id for e in buffer.list(instance="alice") if e.id == "alice-e2"] == []
    assert {buffer.get(f"alice-e{i}").consolidated_into for i in (3, 4, 5)} == {"alice/memory@4"}
    assert buffer.get("alice-e0").consolidated_into == "alice/memory@1"
    assert buffer.get("bob-e2").task == f"remember: {SECRET}", "another instance's episode is untouched"
    # an export of the skill holds no forgotten revision
    archive = store.export("memory", world["tmp"] / "memory.tar.gz")
    with tarfile.open(archive) as tar:
        folders = {Path(m.name).parts[2] for m in tar.getmembers() if len(Path(m.name).parts) > 3}
    assert folders == {"1", "4"}
    assert not (store.root / ".forget").exists() or not any((store.root / ".forget").iterdir()), "journal removed"


def test_forgetting_an_episode_of_revision_1_retrains_from_fresh_weights(world: dict[str, Any]) -> None:
    report = world["alice"].forget(["alice-e0"])
    (skill,) = report.skills
    assert skill.revisions_deleted == [1, 2, 3] and skill.new_revision == 4
    record = world["store"].revision("memory", 4)
    assert record.parent is None and record.provenance.training["init_from"] is None
    assert set(record.provenance.episode_ids) == {f"alice-e{i}" for i in range(1, 6)}
    assert world["store"].get("memory").revision_numbers() == [4]


def test_an_episode_the_buffer_lost_is_reported_missing(world: dict[str, Any]) -> None:
    world["buffer"].discard(["alice-e5"])
    (skill,) = world["alice"].forget(["alice-e2"]).skills
    assert skill.missing == ["alice-e5"] and skill.retrained_on == ["alice-e3", "alice-e4"]


def test_forgetting_everything_deletes_the_skill_with_a_tombstone(world: dict[str, Any]) -> None:
    store = world["store"]
    report = world["alice"].forget([f"alice-e{i}" for i in range(6)], reason="erase me")
    assert [s.action for s in report.skills] == ["delete"]
    assert not store.exists("memory") and not store.skill_dir("memory").exists()
    (tombstone,) = store.forgotten_skills()
    assert tombstone.name == "memory" and tombstone.revisions == (1, 2, 3) and "erase me" in tombstone.note
    assert world["buffer"].list(instance="alice") == []
    assert world["residency"].hot() == [] and world["residency"].warm() == []


def test_match_forgets_this_instances_matching_episodes_only(world: dict[str, Any]) -> None:
    planned = world["alice"].forget(match="LOCKER CODE", dry_run=True)
    assert planned.dry_run and planned.episodes == ["alice-e2"]
    assert world["store"].get("memory").current == 3, "a dry run writes nothing"
    report = world["alice"].forget(match="LOCKER CODE")
    assert report.episodes == ["alice-e2"] and world["store"].get("memory").current == 4
    assert world["buffer"].get("bob-e2").instance == "bob"
    assert world["bob"].forget(match="locker code").skills == [], "bob's episode is in no skill of his"


def test_bad_input_is_refused_in_one_line(world: dict[str, Any]) -> None:
    alice = world["alice"]
    for kwargs in ({}, {"episodes": ["alice-e1"], "match": "ping"}):
        with pytest.raises(UserError, match="not both and not neither"):
            alice.forget(**kwargs)
    with pytest.raises(UserError, match="as a list"):
        alice.forget("alice-e1")
    with pytest.raises(UserError, match="no episode 'nope'"):
        alice.forget(["nope"])
    with pytest.raises(UserError, match="another instance"):
        alice.forget(["bob-e2"])
    with pytest.raises(UserError, match="no episode of this instance matches"):
        alice.forget(match="not there at all")
    assert world["store"].get("memory").revision_numbers() == [1, 2, 3]


def test_the_cli_dry_run_prints_the_plan_and_yes_forgets(world: dict[str, Any], monkeypatch: Any) -> None:
    monkeypatch.setattr(cli_forget, "open_agent", lambda instance: world[instance])
    runner = CliRunner()
    dry = runner.invoke(app, ["forget", "--instance", "alice", "--episode", "alice-e4", "--json"])
    assert dry.exit_code == 0, dry.output
    plan = ForgetReport.model_validate(json.loads(dry.output))
    assert plan.dry_run and [(s.skill, s.revisions_deleted) for s in plan.skills] == [("memory", [3])]
    assert world["store"].get("memory").current == 3
    asked = runner.invoke(app, ["forget", "--instance", "alice", "--episode", "alice-e4"], input="n\n")
    assert asked.exit_code != 0 and "revisions 3 deleted" in asked.output
    done = runner.invoke(app, ["forget", "--instance", "alice", "--episode", "alice-e4", "--yes", "--json"])
    assert done.exit_code == 0, done.output
    (skill,) = ForgetReport.model_validate(json.loads(done.output)).skills
    assert skill.new_revision == 4 and world["store"].revision("memory", 4).parent == 2


def test_a_skill_being_consolidated_is_not_forgotten_under_it(world: dict[str, Any]) -> None:
    from filelock import FileLock

    from memory.claims import LOCKS

    forgetter = world["alice"].forgetter()
    forgetter.lock_timeout = 0
    (world["store"].root / LOCKS).mkdir(exist_ok=True)
    with FileLock(str(world["store"].root / LOCKS / "memory.lock")):
        with pytest.raises(UserError, match="being consolidated"):
            forgetter.forget(["alice-e2"])
    assert world["store"].get("memory").current == 3 and world["buffer"].get("alice-e2")
    assert not list((world["store"].root / ".forget").glob("*.json")), "refused before the journal"


def test_the_conversation_thread_of_a_forgotten_episode_is_deleted(world: dict[str, Any]) -> None:
    alice = world["alice"]
    result = alice.run(f"please remember {SECRET}", thread_id="t-secret")
    assert alice.thread("t-secret"), "the checkpointer holds the conversation"
    report = alice.forget([result.run_id])
    assert report.threads == ["t-secret"] and report.skills == []
    assert alice.thread("t-secret") == [] and world["buffer"].list(instance="alice", consolidated=False) == []


def test_consolidation_finishes_a_forget_that_died(world: dict[str, Any], monkeypatch: Any) -> None:
    kill_forget_at(monkeypatch, "forget:committed")
    with pytest.raises(Killed):
        world["alice"].forget(["alice-e2"])
    store = world["store"]
    assert list((store.root / ".forget").glob("*.json")) and store.get("memory").forgotten() == []
    monkeypatch.undo()
    world["alice"].consolidation = FAST.model_copy(update={"min_episodes": 99})  # nothing new to consolidate
    assert world["alice"].consolidate() == []
    manifest = store.get("memory")
    assert manifest.current == 4 and manifest.forgotten() == [2, 3] and not list((store.root / ".forget").glob("*"))
    assert [e.id for e in world["buffer"].list(instance="alice") if e.id == "alice-e2"] == []


def test_no_consolidation_trains_on_what_an_unfinished_forget_is_removing(
    world: dict[str, Any], monkeypatch: Any
) -> None:
    """Another process (or a Consolidator used directly) consolidates while a forget's journal is on disk."""
    from memory.consolidate import Consolidator
    from skills.instances import PersonalView

    buffer = world["buffer"]
    fresh = [episode(10 + i, task=f"say hello number {i}") for i in range(3)]
    buffer.add_many([*fresh, episode(20, task=f"say hello, {SECRET}")])
    kill_forget_at(monkeypatch, "forget:journaled")
    with pytest.raises(Killed):
        world["alice"].forget(["alice-e20"])
    monkeypatch.undo()
    store, alice = world["store"], world["alice"]
    consolidator = Consolidator(buffer, PersonalView(store, "alice"), world["residency"], alice.base.tokenizer,
                                config=FAST, instance="alice")  # fmt: skip
    reports = consolidator.run()
    trained = {i for r in reports for i in r.episodes}
    assert {e.id for e in fresh} <= trained and "alice-e20" not in trained
    (journal,) = (store.root / ".forget").glob("*.json")
    journal.write_text("{not json")
    with pytest.raises(UserError, match="forget journal"):
        consolidator.run()


def test_skills_history_shows_tombstones(tmp_path: Path, store: SkillStore, adapter: Adapter) -> None:
    home = tmp_path / "home"
    shared = SkillStore(home / "skills", base_fingerprint=store.base_fingerprint)
    shared.create("s", adapter("alpha"), kind="memory")
    shared.add_revision("s", adapter("beta"), promote=False)
    shared.forget_revisions("s", [2], note="asked to")
    runner = CliRunner()
    result = runner.invoke(app, ["skills", "history", "s", "--json"], env={"HABITLOOP_HOME": str(home)})
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["revisions"]
    assert [(r["number"], r["status"]) for r in rows] == [(1, "promoted"), (2, "forgotten")]
    assert rows[1]["note"] == "asked to" and "problem" not in rows[1]
    table = runner.invoke(app, ["skills", "history", "s"], env={"HABITLOOP_HOME": str(home), "COLUMNS": "200"})
    assert table.exit_code == 0 and "forgotten" in table.output and "missing" not in table.output
    shared.forget_skill("s", note="all of it")
    listed = json.loads(runner.invoke(app, ["skills", "list", "--json"], env={"HABITLOOP_HOME": str(home)}).output)
    assert listed["skills"] == [] and [(t["name"], t["note"]) for t in listed["forgotten"]] == [("s", "all of it")]


def test_a_rebuild_whose_episodes_all_left_the_buffer_goes_back_to_the_clean_revision(
    world: dict[str, Any], monkeypatch: Any
) -> None:
    kill_forget_at(monkeypatch, "forget:journaled")
    forgetter = world["alice"].forgetter()
    with pytest.raises(Killed):
        forgetter.forget(["alice-e2"])
    monkeypatch.undo()
    world["buffer"].discard(["alice-e3", "alice-e4", "alice-e5"])  # gone before the rerun could retrain on them
    (report,) = forgetter.recover()
    (skill,) = report.skills
    assert skill.action == "restore" and skill.restored_to == 1 and skill.new_revision is None
    assert sorted(skill.missing) == ["alice-e3", "alice-e4", "alice-e5"]
    manifest = world["store"].get("memory")
    assert manifest.current == 1 and manifest.revision_numbers() == [1] and manifest.forgotten() == [2, 3]


def test_residency_forget_drops_hot_and_warm_and_gives_back_the_plain_base(
    store: SkillStore, adapter: Adapter, fresh_base: Any
) -> None:
    from peft import PeftModel

    store.create("a", adapter("alpha"), kind="memory")
    store.add_revision("a", adapter("beta"))
    residency = Residency(fresh_base.model, store, max_hot=1)
    residency.activate("a", 1)
    residency.activate("a", 2)  # 1 goes warm
    assert (residency.state("a", 1), residency.state("a", 2)) == ("warm", "hot")
    residency.forget("a", 1)
    assert residency.state("a", 1) == "cold" and residency.warm() == []
    residency.forget("a", 2)
    assert residency.state("a", 2) == "cold" and not isinstance(residency.model, PeftModel), "the plain base again"
    residency.forget("a", 2)  # not resident: nothing to do
    residency.activate("a", 1)
    assert residency.state("a", 1) == "hot", "a forgotten key can be loaded again from disk (if it is still there)"


def test_composer_clear_deletes_every_cached_composition(store: SkillStore, adapter: Adapter, fresh_base: Any) -> None:
    from skills.compose import Composer, CompositionSpec

    store.create("a", adapter("alpha"), kind="memory")
    store.create("b", adapter("beta"), kind="memory")
    composer = Composer(Residency(fresh_base.model, store, max_hot=2))
    name = composer.build(CompositionSpec.of("a", "b"))
    assert composer.cached() == [name] and name in composer.model.peft_config
    composer.clear()
    assert composer.cached() == [] and name not in composer.model.peft_config
