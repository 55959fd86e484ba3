"""A skill's lifecycle under concurrency, damage and kill -9: per-skill consolidation locks, broken skills
skipped everywhere (consolidation, routing, listing), deleting and repairing damaged skills by following the hints,
chroma's two-writer error, and what a killed consolidation leaves behind."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import memory.consolidate as consolidate_module
from agent.cli.app import app
from agent.router import Router
from agent.testing import tiny_base
from memory import HashingEmbedder, InMemoryBuffer, Trajectory
from memory.consolidate import CANDIDATES, ConsolidationConfig, ConsolidationReport, Consolidator
from memory.report import skipped_report
from memory.trajectory import SkillUse
from skills import CorruptSkillError, OperatorError, Residency, SkillStore

FAST = ConsolidationConfig(min_episodes=4, replay=2, epochs=1.0, min_steps=2, max_steps=3, max_new_tokens=4)
OTHER_BASE = "sha256:not-the-tiny-base"
runner = CliRunner()


def episodes(n: int, *, offset: int = 0, skill: str | None = None, task: str = "ping number") -> list[Trajectory]:
    out = []
    for i in range(offset, offset + n):
        t = Trajectory.demonstration(f"{task} {i}", f"pong {i}", system_prompt="You answer pings.")
        if skill:
            t = t.model_copy(update={"skills": [SkillUse(name=skill, revision=1)]})
        out.append(t)
    return out


def consolidator(root: Path, buffer: InMemoryBuffer, **kwargs: Any) -> Consolidator:
    """A consolidator with its own base copy and its own store object (own locks) on the shared folder `root`."""
    base = tiny_base()
    store = SkillStore(root / "skills", base_fingerprint=base.fingerprint)
    residency = Residency(base.model, store, max_hot=2)
    return Consolidator(
        buffer, store, residency, base.tokenizer, config=FAST, reports_dir=root / "reports", progress=False, **kwargs
    )


class Race:
    """Two consolidations at once: A is held inside its training until B's run has returned (or `release` is set),
    so B runs while A holds whatever A holds. Records which thread trained."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trained: list[str] = []
        self.a_training = threading.Event()
        self.release = threading.Event()
        self.results: dict[str, Any] = {}
        real = consolidate_module.train_lora

        def train(*args: Any, **kwargs: Any) -> Any:
            who = threading.current_thread().name
            self.trained.append(who)
            if who == "A":
                self.a_training.set()
                assert self.release.wait(120), "B never finished"
            return real(*args, **kwargs)

        monkeypatch.setattr(consolidate_module, "train_lora", train)

    def start(self, name: str, run: Callable[[], Any]) -> threading.Thread:
        def body() -> None:
            try:
                self.results[name] = run()
            except BaseException as error:  # the test inspects it
                self.results[name] = error
            finally:
                if name == "B":
                    self.release.set()

        thread = threading.Thread(target=body, name=name)
        thread.start()
        return thread


# ------------------------------------------------------------------------------------------------------- locks


@pytest.fixture
def shared(tmp_path: Path) -> dict[str, Any]:
    """A buffer and a store folder where skill 'number-ping' has revision 1 (consolidated from 5 episodes)."""
    buffer = InMemoryBuffer(HashingEmbedder())
    buffer.add_many(episodes(5))
    (first,) = consolidator(tmp_path, buffer).run()
    assert first.skill == "number-ping" and first.revision == 1
    return {"root": tmp_path, "buffer": buffer, "skill": first.skill}


def test_two_consolidations_of_one_skill_train_once(shared: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    root, buffer, skill = shared["root"], shared["buffer"], shared["skill"]
    buffer.add_many(episodes(5, offset=100, skill=skill))
    a, b = consolidator(root, buffer), consolidator(root, buffer)
    race = Race(monkeypatch)
    thread_a = race.start("A", lambda: a.run(skill))
    assert race.a_training.wait(120)
    thread_b = race.start("B", lambda: b.run(skill))
    thread_b.join(120)
    thread_a.join(120)

    assert race.trained == ["A"], "B must not train from the parent A is replacing"
    (skipped,) = race.results["B"]
    assert skipped.skipped and skipped.revision is None
    assert skipped.reason == f"skill {skill!r} is being consolidated by another process; skipped"
    (done,) = race.results["A"]
    assert done.revision == 2 and done.parent == 1 and not done.skipped
    store = SkillStore(root / "skills")
    assert [e.number for e in store.history(skill)] == [1, 2]
    assert store.revision(skill, 2).parent == 1


def test_a_waiting_consolidation_rereads_the_state_after_the_first_commits(
    shared: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, buffer, skill = shared["root"], shared["buffer"], shared["skill"]
    first_batch = episodes(5, offset=100, skill=skill)
    buffer.add_many(first_batch)
    a, b = consolidator(root, buffer), consolidator(root, buffer, lock_timeout=120)
    race = Race(monkeypatch)
    thread_a = race.start("A", lambda: a.run(skill))
    assert race.a_training.wait(120)
    late = episodes(5, offset=200, skill=skill)  # arrive while A trains: A chose its episodes before
    buffer.add_many(late)
    thread_b = race.start("B", lambda: b.run(skill))
    time.sleep(1.0)  # ordering only: let B reach the lock A holds (B's outcome is the same if it arrives later)
    race.release.set()
    thread_a.join(120)
    thread_b.join(120)

    (done_a,) = race.results["A"]
    (done_b,) = race.results["B"]
    assert (done_a.revision, done_a.parent) == (2, 1)
    assert (done_b.revision, done_b.parent) == (3, 2), "B trained from A's revision, after A committed"
    store = SkillStore(root / "skills")
    assert set(store.revision(skill, 2).provenance.episode_ids) == {e.id for e in first_batch}
    assert set(store.revision(skill, 3).provenance.episode_ids) == {e.id for e in late}, "nothing trained twice"
    assert store.revision(skill, 3).provenance.training["init_from"].endswith("revs/2")


def test_two_new_skill_consolidations_the_loser_does_not_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = InMemoryBuffer(HashingEmbedder())
    buffer.add_many(episodes(6))
    a, b = consolidator(tmp_path, buffer), consolidator(tmp_path, buffer)
    race = Race(monkeypatch)
    thread_a = race.start("A", a.run)
    assert race.a_training.wait(120)
    thread_b = race.start("B", b.run)
    thread_b.join(120)
    thread_a.join(120)

    assert race.trained == ["A"], "both derived 'number-ping': the loser must not train and then fail"
    assert not isinstance(race.results["A"], BaseException), race.results["A"]
    assert [r.skipped for r in race.results["B"]] == [True]
    assert [(r.skill, r.revision) for r in race.results["A"]] == [("number-ping", 1)]
    assert [m.name for m in SkillStore(tmp_path / "skills").list()] == ["number-ping"]


def test_locks_and_candidates_live_in_the_store_and_are_not_skills(shared: dict[str, Any]) -> None:
    store = SkillStore(shared["root"] / "skills")
    assert (store.root / ".locks" / "number-ping.lock").exists()
    assert not (store.root / CANDIDATES).exists() or not any((store.root / CANDIDATES).iterdir())
    assert store.scan().problems == []


# ------------------------------------------------------------------------------------------------------- broken skills


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    buffer = InMemoryBuffer(HashingEmbedder())
    worker = consolidator(tmp_path, buffer)
    return {"buffer": buffer, "consolidator": worker, "store": worker.store, "root": tmp_path}


def _trainings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = consolidate_module.train_lora

    def train(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(consolidate_module, "train_lora", train)
    return calls


def test_one_broken_revision_does_not_stop_consolidation(setup: dict[str, Any], adapter: Any) -> None:
    store, buffer = setup["store"], setup["buffer"]
    store.create("victim", adapter("alpha"), kind="style")
    store.add_revision("victim", adapter("beta"))
    (store.skill_dir("victim") / "revs" / "1" / "revision.json").write_bytes(b"\x00 garbage")
    buffer.add_many(episodes(5))
    (report,) = setup["consolidator"].run()  # reconcile reads every promoted revision: this one is unreadable
    assert report.skill == "number-ping" and report.revision == 1


def test_broken_and_foreign_targets_are_skipped_unless_named(
    setup: dict[str, Any], adapter: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store, buffer, worker = setup["store"], setup["buffer"], setup["consolidator"]
    store.create("victim", adapter("alpha"), kind="style")
    weights = store.revision_dir("victim") / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    SkillStore(store.root, base_fingerprint=OTHER_BASE).create(
        "foreign", adapter("beta"), kind="style", base_fingerprint=OTHER_BASE
    )
    buffer.add_many(
        [*episodes(4, skill="victim", task="victim"), *episodes(4, skill="foreign", task="foreign"), *episodes(5)]
    )
    calls = _trainings(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="habitloop.consolidate"):
        reports = {r.skill: r for r in worker.run()}
    assert reports["victim"].skipped and "checksum" in reports["victim"].reason
    assert reports["foreign"].skipped and OTHER_BASE in reports["foreign"].reason
    assert reports["number-ping"].revision == 1 and len(calls) == 1, "only the healthy group trained"
    assert sum("victim" in r.message for r in caplog.records) == 1
    with pytest.raises(CorruptSkillError, match="checksum"):
        worker.run("victim")  # named explicitly: the error, with its fix
    assert len(calls) == 1, "refused before training"


def test_a_broken_folder_never_takes_a_new_skill_s_name(setup: dict[str, Any]) -> None:
    store, buffer = setup["store"], setup["buffer"]
    (store.root / "number-ping").mkdir(parents=True)
    (store.root / "number-ping" / "manifest.json").write_text("{not json")
    buffer.add_many(episodes(5))
    (report,) = setup["consolidator"].run()
    assert report.skill == "number-ping-2" and report.revision == 1


@pytest.fixture
def routed(store: SkillStore, adapter: Any) -> SkillStore:
    """'files' (healthy), 'numbers' (current revision lost), 'foreign' (another base), 'garbage' (bad manifest)."""
    store.create("files", adapter("alpha"), kind="domain", description="write notes into files")
    store.create("numbers", adapter("alpha"), kind="domain", description="multiply numbers with the calculator")
    store.add_revision("numbers", adapter("beta"))
    shutil.rmtree(store.skill_dir("numbers") / "revs" / "2")
    SkillStore(store.root, base_fingerprint=OTHER_BASE).create(
        "foreign", adapter("beta"), kind="domain", description="multiply numbers", base_fingerprint=OTHER_BASE
    )
    store.create("garbage", adapter("gamma"), kind="domain", description="multiply numbers quickly")
    (store.skill_dir("garbage") / "manifest.json").write_text("[]")
    return store


def test_the_router_never_routes_to_a_broken_or_foreign_skill(
    routed: SkillStore, caplog: pytest.LogCaptureFixture
) -> None:
    router = Router(routed, HashingEmbedder(), top_k=4, threshold=-1.0)
    with caplog.at_level(logging.WARNING, logger="habitloop.router"):
        decision = router.decide("multiply these numbers with the calculator")
        (routed.root / "unrelated").mkdir()  # any change rebuilds the index: the warnings are not repeated
        router.decide("multiply numbers")
    assert [c.name for c in decision.choices] == ["files"]
    assert set(decision.skipped) == {"numbers", "foreign", "garbage"}
    assert "missing" in decision.skipped["numbers"] and OTHER_BASE in decision.skipped["foreign"]
    warned = [r.message for r in caplog.records]
    assert sum("'numbers'" in m for m in warned) == 1 and sum("'foreign'" in m for m in warned) == 1
    with pytest.raises(Exception, match="cannot be used"):
        router.decide("x", pinned=["numbers"])


def test_the_router_never_routes_to_a_skill_whose_current_record_is_garbage(store: SkillStore, adapter: Any) -> None:
    """`scan` only checks that the files exist (cheap at 10,000 skills); the router reads each new record once."""
    store.create("files", adapter("alpha"), kind="domain", description="write notes into files")
    store.create("notes", adapter("beta"), kind="domain", description="write notes into files quickly")
    (store.revision_dir("notes") / "revision.json").write_text("{not json")
    decision = Router(store, HashingEmbedder(), top_k=4, threshold=-1.0).decide("write my notes into files")
    assert [c.name for c in decision.choices] == ["files"]
    assert "revision.json" in decision.skipped["notes"]


def test_skills_list_shows_broken_skills_as_problems(routed: SkillStore) -> None:
    home = routed.root.parent
    result = runner.invoke(app, ["skills", "list", "--json"], env={"HABITLOOP_HOME": str(home)})
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    # `skills list` opens the store without a base: another base is listed, not a problem there
    assert [s["name"] for s in payload["skills"]] == ["files", "foreign"]
    problems = {p["name"]: p["error"] for p in payload["problems"]}
    assert set(problems) == {"numbers", "garbage"}
    assert "rollback" in problems["numbers"] and "skills delete garbage" in problems["garbage"]


# ------------------------------------------------------------------------------------------------------- repairs


def cli(home: Path, *args: str) -> Any:
    return runner.invoke(app, list(args), env={"HABITLOOP_HOME": str(home)})


@pytest.mark.parametrize("damage", ["garbage", "missing", "empty-folder"])
def test_skills_delete_removes_a_skill_whose_manifest_is_broken(store: SkillStore, adapter: Any, damage: str) -> None:
    store.create("good", adapter("alpha"), kind="domain")
    store.create("victim", adapter("beta"), kind="domain")
    manifest = store.skill_dir("victim") / "manifest.json"
    if damage == "garbage":
        manifest.write_bytes(b"\xff\xfe not json")
    elif damage == "missing":
        manifest.unlink()
    else:
        shutil.rmtree(store.skill_dir("victim"))
        store.skill_dir("victim").mkdir()
    (problem,) = store.scan().problems
    assert "habitloop skills delete victim" in problem.error, "the hint names the fix"
    result = cli(store.root.parent, "skills", "delete", "victim", "--yes")
    assert result.exit_code == 0, result.output
    assert not store.skill_dir("victim").exists() and store.scan().problems == []
    assert [m.name for m in store.list()] == ["good"]


def test_delete_of_a_linked_folder_removes_the_link_only(store: SkillStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (store.root / "sneaky").symlink_to(outside, target_is_directory=True)
    store.delete("sneaky")
    assert not (store.root / "sneaky").exists() and (outside / "keep.txt").read_text() == "mine"


def test_delete_of_a_name_outside_the_store_is_refused(store: SkillStore) -> None:
    result = cli(store.root.parent, "skills", "delete", "../skills", "--yes")
    assert result.exit_code != 0 and store.root.is_dir()


@pytest.fixture
def lost_current(store: SkillStore, adapter: Any) -> SkillStore:
    """'multi' with revisions 1, 2, 3 (current); revision 3's folder is gone."""
    store.create("multi", adapter("alpha"), kind="style")
    store.add_revision("multi", adapter("beta"))
    store.add_revision("multi", adapter("gamma"))
    shutil.rmtree(store.skill_dir("multi") / "revs" / "3")
    return store


def test_following_the_hint_for_a_lost_current_revision_repairs_everything(
    lost_current: SkillStore, tmp_path: Path
) -> None:
    store = lost_current
    with pytest.raises(CorruptSkillError) as info:
        store.revision("multi")
    assert "habitloop skills rollback multi" in str(info.value)
    # history works before the fix too (the lost revision is listed), export says to roll back first
    assert [(e.number, e.problem is None) for e in store.history("multi")] == [(1, True), (2, True), (3, False)]
    with pytest.raises(CorruptSkillError, match="roll back first"):
        store.export("multi", tmp_path / "multi.tar.gz")

    store.rollback("multi")  # the hint
    store.read_adapter("multi")
    entries = store.history("multi")
    assert [e.current for e in entries] == [False, True, False]
    assert entries[2].revision is None and "missing on disk" in str(entries[2].problem)
    assert "habitloop skills export multi" in str(entries[2].problem), "the hint for a lost old revision"
    result = cli(store.root.parent, "skills", "history", "multi", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["revisions"]
    assert [r["number"] for r in rows] == [1, 2, 3] and "problem" in rows[2]

    # export works and leaves the lost revision out; the archive imports; import --replace drops it for good
    archive = store.export("multi", tmp_path / "multi.tar.gz")
    fresh = SkillStore(tmp_path / "fresh", base_fingerprint=store.base_fingerprint)
    assert fresh.import_archive(archive).revision_numbers() == [1, 2]
    store.import_archive(archive, replace=True)
    assert [(e.number, e.problem) for e in store.history("multi")] == [(1, None), (2, None)]
    assert store.get("multi").current == 2 and store.verify("multi") == []


def test_following_the_hint_for_a_lost_old_revision_drops_it(
    store: SkillStore, adapter: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create("multi", adapter("alpha"), kind="style")
    store.add_revision("multi", adapter("beta"))
    (store.skill_dir("multi") / "revs" / "1" / "revision.json").write_text("{}")  # unreadable, not gone
    (entry, _) = store.history("multi")
    assert entry.problem and "habitloop skills import multi.tar.gz --replace" in entry.problem
    monkeypatch.chdir(tmp_path)  # the hint's archive path is relative
    exported = cli(store.root.parent, "skills", "export", "multi", "-o", "multi.tar.gz")
    assert exported.exit_code == 0, exported.output
    store.import_archive(tmp_path / "multi.tar.gz", replace=True)  # `skills import` loads the real base: the API
    assert [(e.number, e.problem) for e in store.history("multi")] == [(2, None)]


# ------------------------------------------------------------------------------------------------------- chroma

_WRITER = textwrap.dedent(
    """
    import sys
    from memory import HashingEmbedder, Trajectory
    from memory.chroma import ChromaBuffer
    buffer = ChromaBuffer(sys.argv[1], embedder=HashingEmbedder())
    buffer.add_many([Trajectory.demonstration(f"other {i}", "x") for i in range(250)])
    """
)


def test_two_embedded_writers_give_an_operator_error_naming_server_mode(tmp_path: Path) -> None:
    from memory.chroma import ChromaBuffer

    buffer = ChromaBuffer(tmp_path / "buffer", embedder=HashingEmbedder())
    try:
        buffer.add(Trajectory.demonstration("first", "a"))
        subprocess.run([sys.executable, "-c", _WRITER, str(tmp_path / "buffer")], check=True, timeout=300)
        with pytest.raises(OperatorError) as info:  # chroma: InternalError "Error finding id"
            buffer.search("other", k=3)
        assert "HABITLOOP_CHROMA_URL" in str(info.value) and "chroma run" in str(info.value)
    finally:
        buffer.close()


def test_chroma_internal_errors_are_operator_errors_on_every_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chromadb.errors import InternalError

    from memory.chroma import ChromaBuffer

    buffer = ChromaBuffer(tmp_path / "buffer", embedder=HashingEmbedder())
    try:
        buffer.add(Trajectory.demonstration("first", "a"))

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise InternalError("Error executing plan: Internal error: Error finding id")

        for method in ("get", "query", "upsert", "update", "delete", "count"):
            monkeypatch.setattr(buffer._collection, method, fail)
        for call in (
            lambda: buffer.list(),
            lambda: buffer.search("x"),
            lambda: buffer.add(Trajectory.demonstration("second", "b")),
            lambda: buffer.mark_consolidated([], "s@1") or buffer.get("nope"),
            lambda: buffer.discard(["x"]),
            lambda: len(buffer),
            lambda: buffer.catalog(),
            lambda: buffer.enforce_capacity(10, 1.0),
        ):
            with pytest.raises(OperatorError, match="Chroma server mode"):
                call()
    finally:
        monkeypatch.undo()
        buffer.close()


# ------------------------------------------------------------------------------------------------------- kill -9


def test_the_cli_prints_a_skipped_consolidation_as_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import agent.api

    reason = "skill 'good' is being consolidated by another process; skipped"

    class Busy:
        def __init__(self, **kwargs: Any) -> None:
            pass

        def consolidate(
            self, skill: str | None, *, min_episodes: int | None = None, facts: bool = False
        ) -> list[ConsolidationReport]:
            return [skipped_report("good", reason)]

    monkeypatch.setattr(agent.api, "Agent", Busy)
    result = runner.invoke(app, ["consolidate", "--skill", "good"], env={"HABITLOOP_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "skipped good" in result.output and "being consolidated by another process" in result.output
    assert "revision None" not in result.output


def test_the_cli_consolidates_a_users_facts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import agent.api

    seen: dict[str, Any] = {}

    class Recording:
        def __init__(self, **kwargs: Any) -> None:
            seen["instance"] = kwargs.get("instance")

        def consolidate(
            self, skill: str | None, *, min_episodes: int | None = None, facts: bool = False
        ) -> list[ConsolidationReport]:
            seen["facts"] = facts
            return []

    monkeypatch.setattr(agent.api, "Agent", Recording)
    args = ["consolidate", "--instance", "ann", "--facts"]
    result = runner.invoke(app, args, env={"HABITLOOP_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert seen == {"instance": "ann", "facts": True}
    assert "not enough waiting turns" in result.output
