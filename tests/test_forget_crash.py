"""kill -9 during a forget: at each crash point, then a rerun, the store and the buffer end as an uninterrupted run
leaves them, and no forgotten revision is left on disk."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from memory import HashingEmbedder
from skills import SkillStore

_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.testing import tiny_base
    from memory import HashingEmbedder, Trajectory
    from memory.chroma import ChromaBuffer
    from memory.consolidate import ConsolidationConfig
    from memory.forget import Forgetter, recipe_retrainer
    from skills import ChatExample, Evaluation, Provenance, Residency, SkillStore, TrainConfig, train_lora

    root, command = Path(sys.argv[1]), sys.argv[2]
    base = tiny_base()
    store = SkillStore(root / "skills", base_fingerprint=base.fingerprint)
    buffer = ChromaBuffer(root / "buffer", embedder=HashingEmbedder())
    residency = Residency(base.model, store)
    if command == "setup":
        eps = [Trajectory.demonstration(f"ping number {i}", f"pong {i}", system_prompt="You answer pings.")
               .model_copy(update={"id": f"e{i}"}) for i in range(6)]
        buffer.add_many(eps)
        fast = ConsolidationConfig(min_episodes=2, replay=0, epochs=1.0, min_steps=3, max_steps=3)
        recipe = Evaluation(details={"config": fast.model_dump()})
        for n in range(3):
            ids = (f"e{2 * n}", f"e{2 * n + 1}")
            out = train_lora(base.model, base.tokenizer, [ChatExample.from_pair("hi", f"yo {n}")], root / f"a{n}",
                             config=TrainConfig(steps=1, batch_size=1, seed=n), progress=False)
            if n == 0:
                store.create("pings", out.adapter_dir, kind="memory", provenance=Provenance(episode_ids=ids),
                             evaluation=recipe)
            else:
                store.add_revision("pings", out.adapter_dir, provenance=Provenance(episode_ids=ids),
                                   evaluation=recipe)
            buffer.mark_consolidated(list(ids), into=f"pings@{n + 1}")
    forgetter = Forgetter(buffer, store, retrainer=recipe_retrainer(store, residency, base.tokenizer),
                          residency=residency)
    if command == "forget":
        forgetter.forget(["e2"], reason="asked")
    elif command == "recover":
        forgetter.recover()
    buffer.close()
    """
)

POINTS = ["journaled", "training", "rebuilt", "committed", "deleted", "discarded"]


def _run(root: Path, command: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HABITLOOP_CRASH_AT"}
    if crash_at:
        env["HABITLOOP_CRASH_AT"] = f"forget:{crash_at}"
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(root), command], env=env, capture_output=True, text=True, timeout=300
    )


def _state(root: Path) -> dict[str, Any]:
    from memory.chroma import ChromaBuffer

    store = SkillStore(root / "skills")
    manifest = store.get("pings")
    buffer = ChromaBuffer(root / "buffer", embedder=HashingEmbedder())
    try:
        marks = {t.id: t.consolidated_into for t in buffer.list()}
    finally:
        buffer.close()
    return {
        "current": manifest.current,
        "revisions": manifest.revision_numbers(),
        "forgotten": manifest.forgotten(),
        "episodes": sorted(store.revision("pings").provenance.episode_ids),
        "parent": store.revision("pings").parent,
        "folders": sorted(p.name for p in (store.skill_dir("pings") / "revs").iterdir()),
        "journals": sorted(p.name for p in (root / "skills" / ".forget").glob("*")),
        "marks": marks,
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("uninterrupted")
    assert _run(root, "setup").returncode == 0
    done = _run(root, "forget")
    assert done.returncode == 0, done.stderr[-2000:]
    return _state(root)


def test_the_uninterrupted_run_rebuilds_from_revision_1(uninterrupted: dict[str, Any]) -> None:
    assert uninterrupted["current"] == 4 and uninterrupted["parent"] == 1
    assert uninterrupted["revisions"] == [1, 4] and uninterrupted["forgotten"] == [2, 3]
    assert uninterrupted["episodes"] == ["e3", "e4", "e5"] and uninterrupted["folders"] == ["1", "4"]
    assert "e2" not in uninterrupted["marks"] and uninterrupted["journals"] == []


# Every point runs in `make test-all`; `make test` keeps the rebuild's training and its commit (the time budget).
FAST_POINTS = ("training", "committed")


@pytest.mark.parametrize(
    "crash_at", [p if p in FAST_POINTS else pytest.param(p, marks=pytest.mark.slow) for p in POINTS]
)
def test_kill_9_during_forget_then_a_rerun_ends_as_an_uninterrupted_run(
    tmp_path: Path, crash_at: str, uninterrupted: dict[str, Any]
) -> None:
    assert _run(tmp_path, "setup").returncode == 0
    crashed = _run(tmp_path, "forget", crash_at)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert _state(tmp_path)["journals"], "the journal is on disk before anything changes"
    rerun = _run(tmp_path, "recover")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _state(tmp_path) == uninterrupted
