"""The episode buffer: one conformance suite for every backend, then what is specific to chromadb.

The `buffer` fixture runs each conformance test on the in-memory reference, on embedded chromadb, and on chromadb
over HTTP against a real `chroma run` server on loopback (skipped, with the reason, only if that server cannot start
here). Conformance tests use the fast `HashingEmbedder`; the real embedder is exercised where it matters: recall
ranking and reopening a persisted store in a fresh process without any download.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.buffer import (
    ALL_INSTANCES,
    BufferStats,
    EpisodeBuffer,
    EpisodeNotFoundError,
    EpisodeSummary,
    InMemoryBuffer,
    plan_evictions,
)
from memory.chroma import ChromaBuffer, ChromaEmbeddingFunction
from memory.embed import Embedder, HashingEmbedder
from memory.trajectory import Outcome, SkillUse, Step, Trajectory
from skills.errors import OperatorError, UserError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOSTILE_INSTANCES = ["../x", "a' OR 1=1; --", 'x" }{ "$ne": "', "名前-ユーザー 🙂", "$and", "a\x00b", " "]
REPO = Path(__file__).resolve().parents[1]


def episode(
    task: str = "add two numbers",
    *,
    status: str = "success",
    instance: str | None = None,
    skills: tuple[str, ...] = (),
    age_days: float = 0.0,
    id: str | None = None,
    consolidated_into: str | None = None,
) -> Trajectory:
    """A small but complete trajectory, `age_days` before NOW."""
    started = NOW - timedelta(days=age_days)
    return Trajectory(
        **({"id": id} if id else {}),
        thread_id="thread-1",
        task=task,
        instance=instance,
        messages=[{"role": "user", "content": task}, {"role": "assistant", "content": "done"}],
        steps=[
            Step(index=0, kind="tool_call", tool="calculator", arguments={"expression": "2+3"}, at=started),
            Step(index=1, kind="final", text="5", ok=True, seconds=0.25, at=started),
        ],
        skills=[SkillUse(name=name, revision=1) for name in skills],
        answer="5",
        outcome=Outcome(status=status, judged_by="checker", score=1.0 if status == "success" else 0.0),  # type: ignore[arg-type]
        prompt_tokens=40,
        completion_tokens=7,
        started_at=started,
        finished_at=started + timedelta(seconds=1.5),
        consolidated_into=consolidated_into,
    )


# --- backends ---------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` on loopback for this module, always stopped at the end."""
    chroma = Path(sys.executable).with_name("chroma")
    if not chroma.is_file():
        pytest.skip(f"the chroma CLI is not installed next to {sys.executable}")
    folder = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        [str(chroma), "run", "--path", str(folder / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "server.log").read_text(errors="replace")[-600:]
                pytest.skip(f"`chroma run` did not start on 127.0.0.1:{port} here (exit {process.poll()}): {tail}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


@pytest.fixture(params=["memory", "chroma", "chroma-http"])
def buffer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EpisodeBuffer]:
    """A fresh, empty buffer of each backend, all on the hashing embedder."""
    if request.param == "memory":
        yield InMemoryBuffer(HashingEmbedder())
        return
    if request.param == "chroma":
        opened = ChromaBuffer(tmp_path / "buffer", embedder=HashingEmbedder())
    else:
        url = request.getfixturevalue("chroma_server")
        opened = ChromaBuffer(url=url, collection=f"t-{uuid.uuid4().hex}", embedder=HashingEmbedder())
    try:
        yield opened
    finally:
        opened.close()


def ids(trajectories: list[Trajectory]) -> list[str]:
    return [t.id for t in trajectories]


# --- conformance: storing and reading ---------------------------------------------------------------------------


def test_add_then_get_round_trips_the_whole_trajectory(buffer: EpisodeBuffer) -> None:
    original = episode(skills=("tool-habit", "style"), instance="alice", consolidated_into="tool-habit@2")
    buffer.add(original)
    assert buffer.get(original.id) == original


def test_get_of_an_unknown_id_is_a_user_error(buffer: EpisodeBuffer) -> None:
    with pytest.raises(EpisodeNotFoundError, match="no episode 'nope'") as caught:
        buffer.get("nope")
    assert isinstance(caught.value, UserError) and isinstance(caught.value, LookupError)


def test_adding_the_same_id_replaces_the_episode(buffer: EpisodeBuffer) -> None:
    first = episode("read the file notes.txt", status="unknown", id="e1")
    buffer.add(first)
    assert buffer.search("read the file notes.txt") == []  # unknown outcomes are not recalled
    judged = first.model_copy(update={"outcome": Outcome(status="success", judged_by="user", reason="thanks")})
    buffer.add(judged)
    buffer.add(judged)
    assert buffer.stats().total == 1
    assert buffer.get("e1").outcome.judged_by == "user"
    [(found, _)] = buffer.search("read the file notes.txt")
    assert found == judged
    # A new task under the same id is re-embedded: the old task no longer finds it first.
    buffer.add(judged.model_copy(update={"task": "what is the weather in Paris"}))
    assert buffer.search("weather in Paris", k=1)[0][0].id == "e1"
    assert buffer.stats().total == 1


def test_add_many_keeps_the_last_of_duplicate_ids(buffer: EpisodeBuffer) -> None:
    a = episode("first version", id="same")
    b = episode("second version", id="same", status="failure")
    buffer.add_many([a, b, episode("other", id="other")])
    assert buffer.get("same") == b
    assert buffer.stats().total == 2
    buffer.add_many([])
    assert buffer.stats().total == 2


def test_returned_episodes_are_copies(buffer: EpisodeBuffer) -> None:
    original = episode(id="e1")
    buffer.add(original)
    original.answer = "changed after add"
    fetched = buffer.get("e1")
    fetched.messages.append({"role": "user", "content": "mutated"})
    assert buffer.get("e1").answer == "5"
    assert len(buffer.get("e1").messages) == 2


def test_add_refuses_what_no_backend_could_store(buffer: EpisodeBuffer) -> None:
    with pytest.raises(UserError, match="instance must be a non-empty string"):
        buffer.add(episode(instance=""))
    with pytest.raises(UserError, match="skill@revision"):
        buffer.add(episode(consolidated_into="no-revision"))
    with pytest.raises(UserError, match="Trajectory"):
        buffer.add({"task": "x"})  # type: ignore[arg-type]
    assert buffer.stats().total == 0


def test_list_filters_sorts_newest_first_and_limits(buffer: EpisodeBuffer) -> None:
    buffer.add_many(
        [
            episode("s old", id="s-old", age_days=3, skills=("calc",)),
            episode("s new", id="s-new", age_days=1, skills=("calc", "files")),
            episode("f mid", id="f-mid", status="failure", age_days=2, skills=("files",)),
            episode("u newest", id="u-newest", status="unknown", age_days=0.5, instance="bob"),
            episode("c oldest", id="c-oldest", age_days=5, consolidated_into="calc@1", skills=("calc",)),
        ]
    )
    assert ids(buffer.list()) == ["u-newest", "s-new", "f-mid", "s-old", "c-oldest"]
    assert ids(buffer.list(limit=2)) == ["u-newest", "s-new"]
    assert buffer.list(limit=0) == []
    assert ids(buffer.list(status="success")) == ["s-new", "s-old", "c-oldest"]
    assert ids(buffer.list(status="failure")) == ["f-mid"]
    assert ids(buffer.list(skill="calc")) == ["s-new", "s-old", "c-oldest"]
    assert ids(buffer.list(skill="files", status="success")) == ["s-new"]
    assert buffer.list(skill="cal") == []  # exact skill names, not substrings
    assert ids(buffer.list(consolidated=True)) == ["c-oldest"]
    assert ids(buffer.list(consolidated=False, status="success", skill="calc", limit=1)) == ["s-new"]
    assert ids(buffer.list(instance="bob")) == ["u-newest"]
    assert ids(buffer.list(instance=None)) == ["s-new", "f-mid", "s-old", "c-oldest"]
    with pytest.raises(UserError):
        buffer.list(limit=-1)


def test_equal_start_times_list_in_one_order_everywhere(buffer: EpisodeBuffer) -> None:
    buffer.add_many([episode(id=name) for name in ("b", "c", "a")])
    assert ids(buffer.list()) == ["c", "b", "a"]  # ties: id descending, the same on every backend


# --- conformance: search ----------------------------------------------------------------------------------------

TASKS = {
    "sum": "compute the sum of 17 and 25 with the calculator",
    "file": "read the file notes.txt from the workspace folder",
    "weather": "what is the weather like in Paris this weekend",
    "poem": "write a short poem about autumn leaves falling",
}


def test_search_ranks_a_near_duplicate_task_first(buffer: EpisodeBuffer) -> None:
    buffer.add_many([episode(task, id=name, age_days=i) for i, (name, task) in enumerate(TASKS.items())])
    hits = buffer.search("compute the sum of 17 and 26 with the calculator", k=4)
    assert hits[0][0].id == "sum"
    assert hits[0][0] == buffer.get("sum")
    scores = [score for _, score in hits]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 0.8 and scores[0] > scores[1] + 0.3
    assert buffer.search(TASKS["file"], k=1)[0][1] == pytest.approx(1.0, abs=1e-4)
    assert len(buffer.search("anything", k=2)) == 2


def test_search_defaults_recall_unconsolidated_successes_only(buffer: EpisodeBuffer) -> None:
    task = TASKS["sum"]
    buffer.add_many(
        [
            episode(task, id="ok"),
            episode(task, id="failed", status="failure"),
            episode(task, id="unknown", status="unknown"),
            episode(task, id="learned", consolidated_into="calc@3"),
        ]
    )
    assert [t.id for t, _ in buffer.search(task, k=10)] == ["ok"]
    assert {t.id for t, _ in buffer.search(task, k=10, status=None)} == {"ok", "failed", "unknown"}
    assert {t.id for t, _ in buffer.search(task, k=10, consolidated=None)} == {"ok", "learned"}
    assert {t.id for t, _ in buffer.search(task, k=10, status="failure", consolidated=None)} == {"failed"}
    assert {t.id for t, _ in buffer.search(task, k=10, status=None, consolidated=None)} == {
        "ok",
        "failed",
        "unknown",
        "learned",
    }


def test_search_filters_by_skill_and_handles_empty_results(buffer: EpisodeBuffer) -> None:
    assert buffer.search("anything") == []
    buffer.add_many(
        [
            episode(TASKS["sum"], id="calc", skills=("calc",)),
            episode(TASKS["sum"] + " again", id="both", skills=("calc", "files")),
            episode(TASKS["file"], id="files", skills=("files",)),
        ]
    )
    assert {t.id for t, _ in buffer.search(TASKS["sum"], k=5, skill="files")} == {"both", "files"}
    assert buffer.search(TASKS["sum"], k=5, skill="absent") == []
    assert buffer.search(TASKS["sum"], k=5, instance="someone") == []
    with pytest.raises(UserError):
        buffer.search("x", k=0)


# --- conformance: consolidation, discard, stats -----------------------------------------------------------------


def test_mark_consolidated_records_the_revision(buffer: EpisodeBuffer) -> None:
    buffer.add_many([episode(TASKS["sum"], id="a"), episode(id="b"), episode(id="c", status="failure")])
    buffer.mark_consolidated(["a", "b"], into="calc@4")
    assert buffer.get("a").consolidated_into == "calc@4"
    assert ids(buffer.list(consolidated=True)) == ["b", "a"]
    assert ids(buffer.list(consolidated=False)) == ["c"]
    assert buffer.search(TASKS["sum"]) == []  # learned episodes leave the default recall
    assert buffer.get("a").task == TASKS["sum"]  # only the mark changed
    assert buffer.search(TASKS["sum"], consolidated=True, k=1)[0][0].id == "a"  # the stored vector is intact
    buffer.mark_consolidated([], into="calc@5")


def test_mark_consolidated_is_all_or_nothing(buffer: EpisodeBuffer) -> None:
    buffer.add(episode(id="a"))
    with pytest.raises(EpisodeNotFoundError, match="missing"):
        buffer.mark_consolidated(["a", "missing"], into="calc@1")
    assert buffer.get("a").consolidated_into is None
    for bad in ("calc", "calc@", "@1", "calc@one", "ca lc@1"):
        with pytest.raises(UserError, match="skill@revision"):
            buffer.mark_consolidated(["a"], into=bad)
    with pytest.raises(UserError, match="list of ids"):
        buffer.mark_consolidated("a", into="calc@1")


def test_discard_removes_and_reports_what_was_there(buffer: EpisodeBuffer) -> None:
    buffer.add_many([episode(id="a"), episode(id="b", consolidated_into="x@1"), episode(id="c")])
    assert buffer.discard(["a", "b", "ghost", "a"]) == ["a", "b"]
    assert buffer.discard([]) == []
    assert ids(buffer.list()) == ["c"]
    with pytest.raises(EpisodeNotFoundError):
        buffer.get("a")
    assert buffer.search("add two numbers", k=5, consolidated=None)[0][0].id == "c"


def test_stats_count_by_status_and_state(buffer: EpisodeBuffer) -> None:
    empty = buffer.stats()
    assert empty == BufferStats(
        total=0,
        by_status={"success": 0, "failure": 0, "unknown": 0},
        unconsolidated=0,
        consolidated=0,
        unconsolidated_successes=0,
    )
    buffer.add_many(
        [
            episode(id="s1", age_days=4),
            episode(id="s2", consolidated_into="calc@1", age_days=2),
            episode(id="f1", status="failure", age_days=1, instance="ann"),
            episode(id="u1", status="unknown", age_days=3),
        ]
    )
    stats = buffer.stats()
    assert stats.total == 4
    assert stats.by_status == {"success": 2, "failure": 1, "unknown": 1}
    assert (stats.unconsolidated, stats.consolidated, stats.unconsolidated_successes) == (3, 1, 1)
    assert stats.oldest == NOW - timedelta(days=4)
    assert stats.newest == NOW - timedelta(days=1)
    assert buffer.stats(instance="ann").total == 1
    assert buffer.stats(instance=None).total == 3
    assert json.loads(stats.model_dump_json())["by_status"]["failure"] == 1


# --- conformance: capacity --------------------------------------------------------------------------------------


def test_capacity_drops_oldest_failures_and_unknowns_never_pending_successes(buffer: EpisodeBuffer) -> None:
    buffer.add_many(
        [
            episode(id="s-oldest", age_days=10),
            episode(id="f-old", status="failure", age_days=9),
            episode(id="u-old", status="unknown", age_days=8),
            episode(id="s-mid", age_days=7),
            episode(id="f-new", status="failure", age_days=1),
            episode(id="s-new", age_days=0),
        ]
    )
    assert buffer.enforce_capacity(None, None, now=NOW) == []
    assert buffer.enforce_capacity(4, None, now=NOW) == ["f-old", "u-old"]
    assert buffer.enforce_capacity(4, None, now=NOW) == []  # idempotent once within capacity
    # Only successes and one failure left: a cap of 1 drops the failure and keeps every pending success.
    assert buffer.enforce_capacity(1, None, now=NOW) == ["f-new"]
    assert ids(buffer.list()) == ["s-new", "s-mid", "s-oldest"]
    assert buffer.enforce_capacity(0, 0, now=NOW) == []


def test_capacity_keeps_what_an_instances_user_said_until_it_is_consolidated(buffer: EpisodeBuffer) -> None:
    """An instance's turns have no checker (status unknown) and are its facts recipe's material: never dropped."""
    buffer.add_many(
        [
            episode(id="said-old", status="unknown", instance="ann", age_days=90),
            episode(id="shared-unknown", status="unknown", age_days=80),
            episode(id="ann-failed", status="failure", instance="ann", age_days=70),
            episode(id="said-new", status="unknown", instance="ann", age_days=1),
        ]
    )
    assert buffer.enforce_capacity(None, 30, now=NOW) == ["shared-unknown", "ann-failed"]
    assert buffer.enforce_capacity(0, None, now=NOW) == []
    assert ids(buffer.list()) == ["said-new", "said-old"]
    buffer.mark_consolidated(["said-old"], into="ann/memory@1")
    assert buffer.enforce_capacity(None, 30, now=NOW) == ["said-old"]


def test_capacity_by_age_drops_consolidated_first_and_keeps_pending_successes(buffer: EpisodeBuffer) -> None:
    buffer.add_many(
        [
            episode(id="c-old", consolidated_into="calc@1", age_days=40),
            episode(id="c-recent", consolidated_into="calc@1", age_days=2),
            episode(id="f-old", status="failure", age_days=50),
            episode(id="s-old", age_days=60),
            episode(id="c-older-failure", status="failure", consolidated_into="calc@1", age_days=45),
            episode(id="u-recent", status="unknown", age_days=1),
        ]
    )
    assert buffer.enforce_capacity(None, 30, now=NOW) == ["c-older-failure", "c-old", "f-old"]
    assert set(ids(buffer.list())) == {"c-recent", "s-old", "u-recent"}
    # Consolidated episodes do not count against the cap: two unconsolidated, cap 2, nothing to drop.
    assert buffer.enforce_capacity(2, None, now=NOW) == []
    assert buffer.enforce_capacity(1, None, now=NOW) == ["u-recent"]
    assert buffer.enforce_capacity(None, 0.5, now=NOW) == ["c-recent"]
    assert ids(buffer.list()) == ["s-old"]


def test_chroma_capacity_under_the_cap_reads_ids_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = ChromaBuffer(tmp_path, embedder=HashingEmbedder())
    buffer.add_many([episode(id=f"f{i}", status="failure", age_days=i) for i in range(5)])
    reads: list[Any] = []
    get = buffer._collection.get

    def spy(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("include"))
        return get(*args, **kwargs)

    monkeypatch.setattr(buffer._collection, "get", spy)
    assert buffer.enforce_capacity(5, None, now=NOW) == []
    assert reads == [[]]  # one id-only read: no trajectory JSON crosses the wire
    assert buffer.enforce_capacity(3, None, now=NOW) == ["f4", "f3"]
    buffer.close()


def test_capacity_arguments_are_checked(buffer: EpisodeBuffer) -> None:
    with pytest.raises(UserError):
        buffer.enforce_capacity(-1, None)
    with pytest.raises(UserError):
        buffer.enforce_capacity(None, -2.0)
    with pytest.raises(UserError):
        buffer.enforce_capacity(None, float("nan"))


_ADD = st.tuples(
    st.just("add"),
    st.integers(0, 9),
    st.sampled_from(["success", "failure", "unknown"]),
    st.integers(0, 20),
    st.sampled_from([False, False, False, True]),  # mostly unconsolidated: the cap only counts those
    st.sampled_from([None, None, "ann"]),
)
_ENFORCE = st.tuples(
    st.just("enforce"), st.one_of(st.none(), st.integers(0, 4)), st.one_of(st.none(), st.integers(0, 15))
)
OPS = st.lists(
    st.one_of(
        _ADD,
        st.tuples(st.just("mark"), st.lists(st.integers(0, 9), max_size=3)),
        st.tuples(st.just("discard"), st.lists(st.integers(0, 9), max_size=2)),
        _ENFORCE,
    ),
    max_size=10,
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.lists(_ADD, min_size=2, max_size=10), ops=OPS, last=_ENFORCE)
def test_capacity_rule_holds_over_random_histories(
    buffer: EpisodeBuffer, start: list[tuple[Any, ...]], ops: list[tuple[Any, ...]], last: tuple[Any, ...]
) -> None:
    """Against a plain dict model: the buffer holds exactly what the model says, and every eviction obeys the rule.

    Each history starts with a few adds and ends with an eviction, so that the cap binds often."""
    buffer.discard([t.id for t in buffer.list()])  # the fixture is shared by hypothesis' examples
    model: dict[str, Trajectory] = {}
    for op in [*start, *ops, last]:
        if op[0] == "add":
            _, n, status, age, learned, instance = op
            into = "s@1" if learned else None
            traj = episode(
                f"task {n}", id=f"e{n}", status=status, age_days=age, consolidated_into=into, instance=instance
            )
            buffer.add(traj)
            model[traj.id] = traj
        elif op[0] == "mark":
            present = [f"e{n}" for n in op[1] if f"e{n}" in model]
            buffer.mark_consolidated(present, into="s@2")
            for i in present:
                model[i] = model[i].model_copy(update={"consolidated_into": "s@2"})
        elif op[0] == "discard":
            wanted = list(dict.fromkeys(f"e{n}" for n in op[1]))
            assert buffer.discard(wanted) == [i for i in wanted if i in model]
            for i in wanted:
                model.pop(i, None)
        else:
            _, cap, max_age = op
            before = dict(model)
            dropped = buffer.enforce_capacity(cap, max_age, now=NOW)
            assert len(dropped) == len(set(dropped)) and set(dropped) <= set(before)
            # Every backend follows the one shared plan, however it reads its episodes.
            assert dropped == plan_evictions([EpisodeSummary.of(t) for t in before.values()], cap, max_age, now=NOW)
            for i in dropped:
                del model[i]
            _check_eviction(before, dropped, model, cap, max_age)
        assert {t.id: t for t in buffer.list()} == model
    stats = buffer.stats()
    assert stats.total == len(model)
    assert stats.unconsolidated == sum(t.consolidated_into is None for t in model.values())


def _check_eviction(
    before: dict[str, Trajectory],
    dropped: list[str],
    after: dict[str, Trajectory],
    cap: int | None,
    max_age: int | None,
) -> None:
    def pending_success(t: Trajectory) -> bool:  # what a consolidation may still learn from
        pending = t.consolidated_into is None
        return pending and (t.outcome.status == "success" or (t.outcome.status == "unknown" and t.instance is not None))

    def too_old(t: Trajectory) -> bool:
        return max_age is not None and t.started_at < NOW - timedelta(days=max_age)

    # A success that is not consolidated (or an instance's turn that did not fail) is never dropped.
    assert not [i for i in dropped if pending_success(before[i])]
    # Nothing droppable is left past the age limit, and nothing young is dropped by age.
    assert not [t for t in after.values() if too_old(t) and not pending_success(t)]
    pending = [t for t in after.values() if t.consolidated_into is None]
    young_drops = [before[i] for i in dropped if not too_old(before[i])]
    if cap is None:
        assert young_drops == []
        return
    # Within the cap, unless only pending successes remain above it.
    assert len(pending) <= cap or all(pending_success(t) for t in pending)
    # Dropped for capacity: unconsolidated, and never younger than a droppable episode that was kept.
    assert all(t.consolidated_into is None for t in young_drops)
    kept = [t for t in pending if not pending_success(t)]
    if young_drops and kept:
        assert max((t.started_at, t.id) for t in young_drops) <= min((t.started_at, t.id) for t in kept)
    # And no more than needed.
    assert len(young_drops) <= max(0, len(pending) + len(young_drops) - cap)


def test_plan_evictions_is_pure_and_ordered() -> None:
    catalog = [EpisodeSummary.of(episode(id=f"f{i}", status="failure", age_days=i)) for i in range(4)]
    assert plan_evictions(catalog, 1, None, now=NOW) == ["f3", "f2", "f1"]
    assert plan_evictions(catalog, None, 1.5, now=NOW) == ["f3", "f2"]
    assert plan_evictions([], 0, 0, now=NOW) == []


# --- conformance: instances -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE_INSTANCES)
def test_an_instance_never_sees_another_instances_episodes(buffer: EpisodeBuffer, hostile: str) -> None:
    task = TASKS["sum"]
    buffer.add_many(
        [
            episode(task, id="mine", instance=hostile),
            episode(task, id="theirs", instance="alice"),
            episode(task, id="shared", instance=None),
            episode(task, id="prefix", instance=hostile + "x"),
        ]
    )
    assert ids(buffer.list(instance=hostile)) == ["mine"]
    assert [t.id for t, _ in buffer.search(task, k=10, instance=hostile)] == ["mine"]
    assert [t.id for t, _ in buffer.search(task, k=10, instance=None)] == ["shared"]
    assert buffer.stats(instance=hostile).total == 1
    assert buffer.get("mine").instance == hostile
    assert {t.id for t in buffer.list(instance=ALL_INSTANCES)} == {"mine", "theirs", "shared", "prefix"}
    assert buffer.list(instance=hostile[:-1] or "other") == []


# --- chromadb specifics -----------------------------------------------------------------------------------------


def test_chroma_buffer_needs_exactly_one_location(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="exactly one"):
        ChromaBuffer(embedder=HashingEmbedder())
    with pytest.raises(UserError, match="exactly one"):
        ChromaBuffer(tmp_path, url="http://127.0.0.1:1", embedder=HashingEmbedder())


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:8000", "http://127.0.0.1:8000/api", "http://127.0.0.1:port"])
def test_chroma_buffer_refuses_malformed_urls(url: str) -> None:
    with pytest.raises(UserError):
        ChromaBuffer(url=url, embedder=HashingEmbedder())


def test_an_unreachable_chroma_server_is_an_operator_error() -> None:
    with pytest.raises(OperatorError, match="chroma run"):
        ChromaBuffer(url=f"http://127.0.0.1:{_free_port()}", embedder=HashingEmbedder())


def test_a_bad_collection_name_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="collection"):
        ChromaBuffer(tmp_path, collection="x", embedder=HashingEmbedder())


def test_a_collection_refuses_a_different_embedder(tmp_path: Path) -> None:
    ChromaBuffer(tmp_path, embedder=HashingEmbedder(64)).close()
    with pytest.raises(UserError, match="hashing-64"):
        ChromaBuffer(tmp_path, embedder=HashingEmbedder(32))
    with ChromaBuffer(tmp_path, collection="other", embedder=HashingEmbedder(32)) as other:
        assert other.stats().total == 0


def test_the_embedding_function_speaks_chromas_protocol() -> None:
    function = ChromaEmbeddingFunction(HashingEmbedder(16))
    assert not function.is_legacy()
    rebuilt = ChromaEmbeddingFunction.build_from_config(function.get_config())
    assert (
        rebuilt.get_config()
        == function.get_config()
        == {"name": "hashing-16", "embedder": HashingEmbedder(16).config()}
    )
    assert [list(v) for v in rebuilt(["a b"])] == [list(v) for v in function(["a b"])]
    unknown = ChromaEmbeddingFunction.build_from_config({"name": "custom", "embedder": {"kind": "custom"}})
    with pytest.raises(OperatorError, match="register_embedder"):
        unknown(["text"])
    with pytest.raises(ValueError, match="switch embedder"):
        function.validate_config_update({"name": "a"}, {"name": "b"})


_CHILD = """
import json, sys, warnings
warnings.simplefilter("error")  # reopening must not warn (unclosed sockets, legacy embedding-function configs)
from memory.chroma import ChromaBuffer
from memory.embed import {embedder}
from memory.trajectory import Trajectory
buffer = ChromaBuffer(sys.argv[1], embedder={embedder}())
listed = [t.id for t in buffer.list()]
hits = [(t.id, round(s, 3)) for t, s in buffer.search(sys.argv[2], k=3, status=None, consolidated=None)]
buffer.add(Trajectory(id="from-child", thread_id="t", task="added by the child process"))
print(json.dumps({{"listed": listed, "hits": hits, "learned": buffer.get("sum").consolidated_into}}))
buffer.close()
"""


def _run_child(store: Path, query: str, embedder: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    code = textwrap.dedent(_CHILD.format(embedder=embedder))
    done = subprocess.run(
        [sys.executable, "-c", code, str(store), query],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_persisted_buffer_is_seen_by_a_new_process(tmp_path: Path) -> None:
    store = tmp_path / "buffer"
    with ChromaBuffer(store, embedder=HashingEmbedder()) as buffer:
        buffer.add_many([episode(TASKS[name], id=name, age_days=i) for i, name in enumerate(TASKS)])
        buffer.mark_consolidated(["sum"], into="calc@2")
    seen = _run_child(store, TASKS["weather"], "HashingEmbedder")
    assert seen["listed"] == list(TASKS)
    assert seen["hits"][0][0] == "weather"
    assert seen["learned"] == "calc@2"
    with ChromaBuffer(store, embedder=HashingEmbedder()) as buffer:
        assert buffer.stats().total == len(TASKS) + 1
        assert buffer.get("from-child").task == "added by the child process"


def test_a_real_embedder_store_reopens_offline_without_any_download(tmp_path: Path) -> None:
    """Written here with the real model, reopened by a fresh process whose caches are empty and network is off."""
    store = tmp_path / "buffer"
    with ChromaBuffer(store, embedder=Embedder()) as buffer:
        buffer.add_many([episode(TASKS[name], id=name) for name in TASKS])
        buffer.mark_consolidated(["sum"], into="calc@2")
        assert buffer.search("add 17 and 25 using a calculator", consolidated=None, k=1)[0][0].id == "sum"
    home = tmp_path / "home"
    env = {"HOME": str(home), "HF_HOME": str(home / "hf"), "XDG_CACHE_HOME": str(home / "cache"), "HF_HUB_OFFLINE": "1"}
    seen = _run_child(store, "is it going to rain in Paris on Saturday?", "Embedder", env)
    assert seen["hits"][0][0] == "weather"
    assert sorted(seen["listed"]) == sorted(TASKS)
    # chromadb's default embedding function would have fetched an ONNX model into ~/.cache/chroma.
    assert not (home / ".cache").exists() and not (home / "cache").exists() and not (home / "hf").exists()
