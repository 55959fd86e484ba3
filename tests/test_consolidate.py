"""Consolidation on the tiny model: select, train, gate, commit, mark, report; idempotent reruns; kill -9 safety."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from memory import HashingEmbedder, InMemoryBuffer, Outcome, Trajectory
from memory.consolidate import CANDIDATES, ConsolidationConfig, ConsolidationReport, Consolidator
from memory.dataset import derive_name, example_from
from memory.gate import Scorer, Scores, Trial
from memory.offtask import OFF_TASK_EVAL, OFF_TASK_TRAIN, off_task_chats, replay_count
from memory.trajectory import SkillUse
from skills import Residency, SkillStore
from tools import parse_tool_calls

FAST = ConsolidationConfig(min_episodes=4, replay=2, epochs=1.0, min_steps=2, max_steps=3, max_new_tokens=4)


def episodes(n: int, *, offset: int = 0, skill: str | None = None) -> list[Trajectory]:
    out = []
    for i in range(offset, offset + n):
        t = Trajectory.demonstration(f"ping number {i}", f"pong {i}", system_prompt="You answer pings.")
        if skill:
            t = t.model_copy(update={"skills": [SkillUse(name=skill, revision=1)]})
        out.append(t)
    return out


@pytest.fixture
def setup(tmp_path: Path, fresh_base: Any) -> dict[str, Any]:
    store = SkillStore(tmp_path / "skills", base_fingerprint=fresh_base.fingerprint)
    buffer = InMemoryBuffer(HashingEmbedder())
    residency = Residency(fresh_base.model, store, max_hot=2)
    consolidator = Consolidator(
        buffer, store, residency, fresh_base.tokenizer, config=FAST, reports_dir=tmp_path / "reports", progress=False
    )
    return {"store": store, "buffer": buffer, "consolidator": consolidator, "tmp": tmp_path}


def test_a_new_skill_is_created_from_skill_less_successes(setup: dict[str, Any]) -> None:
    store, buffer, consolidator = setup["store"], setup["buffer"], setup["consolidator"]
    eps = episodes(6)
    failure = Trajectory.demonstration("ping failed", "no").model_copy(
        update={"outcome": Outcome(status="failure", judged_by="checker")}
    )
    buffer.add_many([*eps, failure])

    (report,) = consolidator.run()
    assert report.created and report.promoted and report.revision == 1
    assert report.skill == "number-ping" and store.exists("number-ping")
    manifest = store.get("number-ping")
    assert manifest.kind == "memory" and "6 successful episodes" in manifest.description
    record = store.revision("number-ping")
    assert set(record.provenance.episode_ids) == {e.id for e in eps}, "provenance names exactly the episodes"
    assert "candidate_heldout_match" in record.evaluation.metrics
    # the episodes leave the retrieval pool; the failure stays
    assert {e.id for e in buffer.list(consolidated=False)} == {failure.id}
    assert all(buffer.get(e.id).consolidated_into == "number-ping@1" for e in eps)
    # report: JSON and a plot
    assert report.report_path and Path(report.report_path).is_file()
    assert json.loads(Path(report.report_path).read_text())["skill"] == "number-ping"
    assert report.plot_path and Path(report.plot_path).read_bytes()[:4] == b"\x89PNG"
    assert report.losses and report.train_tokens_per_second > 0


def test_too_few_episodes_do_nothing(setup: dict[str, Any]) -> None:
    setup["buffer"].add_many(episodes(3))
    assert setup["consolidator"].run() == []
    assert setup["store"].list() == []


def test_a_second_round_adds_a_revision_continuing_from_the_first(setup: dict[str, Any]) -> None:
    store, buffer, consolidator = setup["store"], setup["buffer"], setup["consolidator"]
    buffer.add_many(episodes(5))
    (first,) = consolidator.run()
    buffer.add_many(episodes(5, offset=100, skill=first.skill))
    (second,) = consolidator.run(first.skill)
    assert second.parent == 1 and second.revision == 2 and not second.created
    record = store.revision(first.skill, 2)
    assert record.parent == 1 and record.provenance.training["init_from"].endswith("revs/1")
    assert second.current.regression_match is not None, "earlier episodes are re-checked"


def test_a_rejected_candidate_is_kept_but_changes_nothing(setup: dict[str, Any], fresh_base: Any) -> None:
    store, buffer, consolidator = setup["store"], setup["buffer"], setup["consolidator"]
    buffer.add_many(episodes(5))
    (first,) = consolidator.run()
    new = episodes(5, offset=50, skill=first.skill)
    buffer.add_many(new)

    calls = 0

    def worse(model: Any, trial: Trial) -> Scores:
        nonlocal calls
        calls += 1  # first call scores the candidate (made worse), the second the current revision
        return Scores(heldout_match=0.0 if calls % 2 else 1.0, offtask_call_rate=0.0)

    gated = Consolidator(
        buffer,
        store,
        consolidator.residency,
        fresh_base.tokenizer,
        config=FAST,
        reports_dir=setup["tmp"] / "reports",
        progress=False,
        scorer=worse,
    )
    (report,) = gated.run(first.skill)
    assert not report.promoted and report.reason.startswith("rejected")
    assert store.get(first.skill).current == 1
    assert [h.status for h in store.history(first.skill)] == ["promoted", "rejected"]
    assert {e.id for e in buffer.list(consolidated=False)} == {e.id for e in new}, "nothing marked"
    # rerunning on the same data does not train again: that exact attempt was already made
    (again,) = gated.run(first.skill)
    assert again.reason.startswith("already tried") and len(store.history(first.skill)) == 2


def test_replay_grows_with_the_demonstrations_up_to_the_pool() -> None:
    assert replay_count(4, floor=2, share=0.2) == 2, "the floor holds for small groups"
    assert replay_count(100, floor=2, share=0.2) == 20, "a fifth of the trained episodes"
    assert replay_count(1000, floor=2, share=0.2) == len(OFF_TASK_TRAIN), "never more than the pool"
    assert replay_count(100, floor=0, share=0.0) == 0, "replay can be turned off"


def test_the_off_task_pools_are_disjoint_and_large_enough_to_resolve_one_call() -> None:
    assert not set(OFF_TASK_TRAIN) & set(OFF_TASK_EVAL), "the check must not ask what replay trained on"
    assert len(set(OFF_TASK_TRAIN)) == len(OFF_TASK_TRAIN) and len(set(OFF_TASK_EVAL)) == len(OFF_TASK_EVAL)
    assert 1 / len(OFF_TASK_EVAL) <= ConsolidationConfig().margin, "one stray call fits in the default margin"


def test_off_task_prompts_take_the_episodes_system_prompts_in_turn() -> None:
    chats = off_task_chats(["q1", "q2", "q3"], ["tools A", "tools B"])
    assert [c[0]["content"] for c in chats] == ["tools A", "tools B", "tools A"]
    assert [c[-1] for c in chats] == [{"role": "user", "content": q} for q in ("q1", "q2", "q3")]
    assert off_task_chats(["q1"], [None]) == [[{"role": "user", "content": "q1"}]], "no system prompt, none added"


def test_replay_share_sets_the_replay_in_a_real_run(setup: dict[str, Any]) -> None:
    buffer, consolidator = setup["buffer"], setup["consolidator"]
    consolidator.config = FAST.model_copy(update={"replay": 0, "replay_share": 0.5})
    buffer.add_many(episodes(10))  # 8 trained + 2 held out
    (report,) = consolidator.run()
    assert (report.n_train, report.n_holdout, report.n_replay) == (8, 2, 4)


def test_the_gate_counts_fenced_and_python_style_calls_with_the_agents_parser(setup: dict[str, Any]) -> None:
    replies = [
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        'get_weather(city="Paris")',
        "Paris is the capital of France.",
    ]
    default = setup["consolidator"].scorer
    assert isinstance(default, Scorer) and default.call_rate(replies) == 0.0, "the default check misses both"

    def agents_check(text: str) -> bool:  # what agent.api injects
        return bool(parse_tool_calls(text).calls)

    consolidator = Consolidator(
        setup["buffer"], setup["store"], setup["consolidator"].residency, None, is_tool_call=agents_check
    )
    scorer = consolidator.scorer
    assert isinstance(scorer, Scorer) and scorer.call_rate(replies) == 2 / 3


def test_derive_name_is_a_unique_slug() -> None:
    eps = episodes(3)
    name, description = derive_name(eps, {"number-ping"})
    assert name == "number-ping-2" and "3 successful episodes" in description
    assert example_from(eps[0]).messages[0].role == "system"


# ------------------------------------------------------------------------------------------------------- crashes

_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.testing import tiny_base
    from memory import HashingEmbedder, Trajectory
    from memory.chroma import ChromaBuffer
    from memory.consolidate import ConsolidationConfig, Consolidator
    from skills import Residency, SkillStore

    root = Path(sys.argv[1])
    base = tiny_base()
    store = SkillStore(root / "skills", base_fingerprint=base.fingerprint)
    buffer = ChromaBuffer(root / "buffer", embedder=HashingEmbedder())
    if not buffer.list():
        buffer.add_many([
            Trajectory.demonstration(f"ping number {i}", f"pong {i}", system_prompt="You answer pings.")
            for i in range(5)
        ])
    config = ConsolidationConfig(min_episodes=4, replay=2, epochs=1.0, min_steps=3, max_steps=3, max_new_tokens=4)
    reports = Consolidator(buffer, store, Residency(base.model, store), base.tokenizer, config=config,
                           reports_dir=root / "reports", progress=False).run()
    print("REPORTS", [(r.skill, r.revision, r.promoted, r.reason[:20]) for r in reports])
    """
)


def _consolidate_in_subprocess(root: Path, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HABITLOOP_CRASH_AT"}
    env["TMPDIR"] = str(root / "tmp")  # so a test can check that nothing of habitloop's is left there
    (root / "tmp").mkdir(exist_ok=True)
    if crash_at:
        env["HABITLOOP_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(root)], env=env, capture_output=True, text=True, timeout=300
    )


def _state(root: Path) -> tuple[list[tuple[str, int, list[str]]], dict[str, str | None]]:
    from memory.chroma import ChromaBuffer

    store = SkillStore(root / "skills")
    skills = [(m.name, m.current, [h.status for h in store.history(m.name)]) for m in store.list()]
    buffer = ChromaBuffer(root / "buffer", embedder=HashingEmbedder())
    try:
        marks = {t.id: t.consolidated_into for t in buffer.list()}
    finally:
        buffer.close()
    return skills, marks


# Every kill point runs in `make test-all`; `make test` keeps one on each side of the commit (the suite's time budget).
LATER = pytest.mark.slow


@pytest.mark.parametrize(
    "crash_at", ["training", pytest.param("saved", marks=LATER), "committed", pytest.param("marked", marks=LATER)]
)
def test_kill_9_during_consolidation_loses_nothing_and_a_rerun_finishes(tmp_path: Path, crash_at: str) -> None:
    crashed = _consolidate_in_subprocess(tmp_path, crash_at)
    assert crashed.returncode == -9, crashed.stderr[-2000:]

    skills, marks = _state(tmp_path)
    assert len(marks) == 5, "no episode lost"
    committed = {f"{name}@{current}" for name, current, _ in skills}
    for into in marks.values():
        assert into is None or into in committed, "never marked into a revision that was not committed"
    if crash_at in ("training", "saved"):
        assert skills == [] and set(marks.values()) == {None}

    rerun = _consolidate_in_subprocess(tmp_path, None)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    skills, marks = _state(tmp_path)
    assert skills == [("number-ping", 1, ["promoted"])], "exactly one revision, however the first run ended"
    assert set(marks.values()) == {"number-ping@1"}

    # and once more: nothing left to do, nothing changes
    assert _consolidate_in_subprocess(tmp_path, None).returncode == 0
    assert _state(tmp_path) == (skills, marks)


@pytest.mark.parametrize("crash_at", ["training", "committed", pytest.param("marked", marks=LATER)])
def test_a_killed_consolidation_leaves_no_candidate_and_its_report_is_written(tmp_path: Path, crash_at: str) -> None:
    crashed = _consolidate_in_subprocess(tmp_path, crash_at)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert not list((tmp_path / "tmp").glob("habitloop-candidate-*")), "nothing of habitloop's in $TMPDIR"

    rerun = _consolidate_in_subprocess(tmp_path, None)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    candidates = tmp_path / "skills" / CANDIDATES
    assert not candidates.exists() or not any(candidates.iterdir()), "the stale candidate is swept"
    reports = [ConsolidationReport.model_validate_json(p.read_text()) for p in (tmp_path / "reports").glob("*.json")]
    assert [(r.skill, r.revision, r.promoted) for r in reports] == [("number-ping", 1, True)], (
        "exactly one report of the committed revision, however the first run ended"
    )
    if crash_at != "training":
        assert "killed" in reports[0].reason and reports[0].losses, "written from the draft saved before the commit"
