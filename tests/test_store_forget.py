"""The store's half of forgetting: revisions deleted on purpose with tombstones, whole skills with a listable
tombstone, numbers never reused, and manifests written before the `forget` action still loading."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from skills import Provenance, SkillManifest, SkillNotFoundError, SkillStore, UserError

Adapter = Callable[[str], Path]


@pytest.fixture
def three(store: SkillStore, adapter: Adapter) -> SkillStore:
    store.create("s", adapter("alpha"), kind="memory", provenance=Provenance(episode_ids=("e1",)))
    store.add_revision("s", adapter("beta"), provenance=Provenance(episode_ids=("e2",)))
    store.add_revision("s", adapter("gamma"), provenance=Provenance(episode_ids=("e3",)))
    return store


def test_forgotten_revisions_leave_the_disk_and_history_keeps_tombstones(three: SkillStore) -> None:
    three.rollback("s", to=1)
    assert three.forget_revisions("s", [2, 3], note="user asked") == [2, 3]
    assert not (three.skill_dir("s") / "revs" / "2").exists() and not (three.skill_dir("s") / "revs" / "3").exists()
    manifest = three.get("s")
    assert manifest.revision_numbers() == [1] and manifest.forgotten() == [2, 3]
    assert manifest.status_of(2) == "forgotten"
    history = three.history("s")
    assert [(h.number, h.status, h.problem) for h in history] == [
        (1, "promoted", None),
        (2, "forgotten", None),
        (3, "forgotten", None),
    ], "gone on purpose, not lost"
    tombstone = history[1].tombstone
    assert tombstone is not None and tombstone.note == "user asked" and tombstone.action == "forget"
    assert three.verify("s") == [], "verify does not report forgotten revisions as damage"
    with pytest.raises(SkillNotFoundError):
        three.revision("s", 2)


def test_forgetting_is_idempotent_and_never_the_current_revision(three: SkillStore) -> None:
    with pytest.raises(UserError, match="current"):
        three.forget_revisions("s", [3])
    three.rollback("s", to=1)
    three.forget_revisions("s", [3])
    (three.skill_dir("s") / "revs" / "3").mkdir()  # a folder a crash left behind
    three.forget_revisions("s", [3])
    assert not (three.skill_dir("s") / "revs" / "3").exists()
    assert [e.action for e in three.get("s").history].count("forget") == 1, "one tombstone per revision"
    with pytest.raises(SkillNotFoundError):
        three.forget_revisions("s", [9])


def test_numbers_are_never_reused_and_fresh_revisions_have_no_parent(three: SkillStore, adapter: Adapter) -> None:
    three.rollback("s", to=1)
    three.forget_revisions("s", [2, 3])
    record = three.add_revision("s", adapter("beta"), fresh=True)
    assert record.number == 4 and record.parent is None
    assert three.add_revision("s", adapter("alpha"), parent=1).parent == 1


def test_export_and_import_leave_forgotten_revisions_out(three: SkillStore, tmp_path: Path, tiny: object) -> None:
    three.rollback("s", to=1)
    three.forget_revisions("s", [2, 3], note="why")
    archive = three.export("s", tmp_path / "s.tar.gz")
    other = SkillStore(tmp_path / "other", base_fingerprint=three.base_fingerprint)
    manifest = other.import_archive(archive)
    assert manifest.revision_numbers() == [1] and manifest.forgotten() == [2, 3]
    assert sorted(p.name for p in (other.skill_dir("s") / "revs").iterdir()) == ["1"]


def test_a_forgotten_skill_leaves_a_listable_tombstone(three: SkillStore) -> None:
    tombstone = three.forget_skill("s", note="all of it")
    assert not three.exists("s") and not three.skill_dir("s").exists()
    assert tombstone.revisions == (1, 2, 3)
    assert three.forgotten_skills() == [tombstone]
    assert three.forget_skill("s", note="all of it") == tombstone, "a rerun changes nothing"
    assert len(three.forgotten_skills()) == 1
    assert [m.name for m in three.list()] == [], "the tombstone file is not a skill"


def test_a_manifest_from_before_forgetting_still_loads(three: SkillStore) -> None:
    path = three.skill_dir("s") / "manifest.json"
    data = json.loads(path.read_text())
    assert {e["action"] for e in data["history"]} == {"create", "promote"}
    old = SkillManifest.model_validate(data)
    assert old.forgotten() == [] and old.revision_numbers() == [1, 2, 3] and old.last_number() == 3
