"""The skill store: lifecycle, export/import, base checks, bad input, hostile archives, crash safety, concurrency."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from filelock import FileLock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from skills import (
    BaseMismatchError,
    CorruptSkillError,
    Evaluation,
    HabitloopError,
    InvalidAdapterError,
    InvalidSkillNameError,
    LoraSpec,
    OperatorError,
    Provenance,
    SkillExistsError,
    SkillNotFoundError,
    SkillStore,
    StoreLockedError,
    TrainConfig,
    UnsafeArchiveError,
    UserError,
)

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
OTHER_BASE = "sha256:not-the-tiny-base"

Adapter = Callable[[str], Path]


# ------------------------------------------------------------------------------------------------ helpers


def skill_names(store: SkillStore) -> set[str]:
    return {manifest.name for manifest in store.list()}


def root_entries(store: SkillStore) -> set[str]:
    """Top-level entries of the store's folder, minus the lock and the staging/trash bookkeeping."""
    return {p.name for p in store.root.iterdir()} - {".lock", ".tmp", ".trash", ".generation"}


def staged_leftovers(store: SkillStore) -> list[Path]:
    """Files still inside the staging and trash areas."""
    return [p for area in (".tmp", ".trash") for p in (store.root / area).rglob("*") if p.is_file()]


def assert_same_tensors(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def folder_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / WEIGHTS))


@pytest.fixture
def three_revisions(store: SkillStore, adapter: Adapter) -> SkillStore:
    """Skill 'multi': revision 1 (alpha, created), 2 (beta, promoted), 3 (gamma, rejected); current is 2."""
    store.create("multi", adapter("alpha"), kind="style", description="three revisions", tags=["t1"])
    store.add_revision("multi", adapter("beta"), note="better")
    store.add_revision("multi", adapter("gamma"), promote=False, note="worse")
    return store


# ------------------------------------------------------------------------------------------------ lifecycle


def test_create_then_get_and_list(store: SkillStore, adapter: Adapter, trained: dict[str, Path]) -> None:
    assert store.list() == []
    provenance = Provenance(source="trained", n_examples=2, note="from a test")
    manifest = store.create(
        "greeter",
        adapter("alpha"),
        kind="style",
        description="says hello",
        tags=["a", "b"],
        provenance=provenance,
        evaluation=Evaluation(metrics={"acc": 0.5}),
    )
    assert manifest.name == "greeter" and manifest.current == 1 and manifest.kind == "style"
    assert store.get("greeter") == manifest
    assert store.exists("greeter") and not store.exists("other")
    assert [m.name for m in store.list()] == ["greeter"]

    record = store.revision("greeter")
    assert record.number == 1 and record.parent is None
    assert record.base_fingerprint == store.base_fingerprint
    assert record.provenance.note == "from a test" and record.provenance.library_versions  # filled in
    assert record.evaluation.metrics == {"acc": 0.5}
    assert set(record.files) == {CONFIG, WEIGHTS}
    assert record.trainable_params == sum(t.numel() for t in folder_tensors(trained["alpha"]).values())

    # the revision folder is a plain PEFT adapter folder, byte-identical to what was given
    folder = store.revision_dir("greeter")
    for name in (CONFIG, WEIGHTS):
        assert (folder / name).read_bytes() == (trained["alpha"] / name).read_bytes()
    weights = store.read_adapter("greeter")
    assert weights.skill == "greeter" and weights.record == record
    assert_same_tensors(weights.tensors, folder_tensors(trained["alpha"]))
    assert weights.config["peft_type"] == "LORA"


def test_create_refuses_an_existing_name(store: SkillStore, adapter: Adapter) -> None:
    store.create("dup", adapter("alpha"), kind="style")
    before = store.get("dup")
    with pytest.raises(SkillExistsError, match="dup"):
        store.create("dup", adapter("beta"), kind="style")
    assert store.get("dup") == before
    assert_same_tensors(store.read_adapter("dup").tensors, folder_tensors(adapter("alpha")))


@pytest.mark.parametrize("name", ["../escape", "Bad", "a/b", "", ".hidden"])
def test_create_refuses_bad_names_without_writing(store: SkillStore, adapter: Adapter, name: str) -> None:
    with pytest.raises(InvalidSkillNameError):
        store.create(name, adapter("alpha"), kind="style")
    assert root_entries(store) == set()
    assert not (store.root.parent / "escape").exists()


def test_create_with_an_unknown_kind_commits_nothing(store: SkillStore, adapter: Adapter) -> None:
    with pytest.raises(UserError, match="unknown skill kind"):
        store.create("kindless", adapter("alpha"), kind="not-a-kind")
    assert root_entries(store) == set()
    assert skill_names(store) == set()


def test_create_with_an_unknown_kind_is_a_user_error(store: SkillStore, adapter: Adapter) -> None:
    with pytest.raises(UserError, match="unknown skill kind"):
        store.create("kindless", adapter("alpha"), kind="not-a-kind")


def test_add_revision_promotes_by_default(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")
    record = store.add_revision("s", adapter("beta"), provenance=Provenance(note="second"), note="why")
    assert record.number == 2 and record.parent == 1
    manifest = store.get("s")
    assert manifest.current == 2
    assert manifest.history[-1].action == "promote" and manifest.history[-1].note == "why"
    assert store.revision("s").provenance.note == "second"
    assert_same_tensors(store.read_adapter("s").tensors, folder_tensors(adapter("beta")))
    assert_same_tensors(store.read_adapter("s", 1).tensors, folder_tensors(adapter("alpha")))


def test_add_revision_without_promote_is_kept_as_rejected(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")
    before = store.get("s")
    record = store.add_revision("s", adapter("beta"), promote=False)
    after = store.get("s")
    assert record.number == 2
    assert after.current == 1 and after.lora == before.lora
    assert after.status_of(2) == "rejected"
    assert [(h.revision.number, h.status, h.current) for h in store.history("s")] == [
        (1, "promoted", True),
        (2, "rejected", False),
    ]
    # the current adapter is still the first one; the rejected one is readable by number
    assert_same_tensors(store.read_adapter("s").tensors, folder_tensors(adapter("alpha")))
    assert_same_tensors(store.read_adapter("s", 2).tensors, folder_tensors(adapter("beta")))


def test_add_revision_records_an_explicit_parent(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")
    store.add_revision("s", adapter("beta"))
    assert store.add_revision("s", adapter("gamma"), parent=1).parent == 1


def test_add_revision_refuses_an_unknown_parent(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")
    with pytest.raises(SkillNotFoundError):
        store.add_revision("s", adapter("beta"), parent=99)


def test_add_revision_to_a_missing_skill(store: SkillStore, adapter: Adapter) -> None:
    with pytest.raises(SkillNotFoundError, match="nope"):
        store.add_revision("nope", adapter("alpha"))
    assert root_entries(store) == set()


def test_history_lists_every_committed_revision(three_revisions: SkillStore) -> None:
    history = three_revisions.history("multi")
    assert [(h.revision.number, h.status, h.current) for h in history] == [
        (1, "promoted", False),
        (2, "promoted", True),
        (3, "rejected", False),
    ]
    assert [h.revision.parent for h in history] == [None, 1, 2]
    assert [e.action for e in three_revisions.get("multi").history] == ["create", "promote", "reject"]


def test_rollback_goes_to_the_previous_promoted_revision(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")  # 1
    store.add_revision("s", adapter("beta"))  # 2, promoted
    store.add_revision("s", adapter("gamma"), promote=False)  # 3, rejected
    store.add_revision("s", adapter("gamma"))  # 4, promoted
    assert store.get("s").current == 4
    assert store.rollback("s").current == 2  # skips the rejected 3
    assert store.get("s").current == 2
    assert store.rollback("s").current == 1
    with pytest.raises(UserError, match="no promoted revision older than 1"):
        store.rollback("s")
    assert store.get("s").current == 1  # the failed rollback changed nothing
    assert store.get("s").history[-1].action == "rollback"


def test_rollback_to_a_given_revision(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")
    store.add_revision("s", adapter("beta"))
    store.add_revision("s", adapter("gamma"), promote=False)
    assert store.rollback("s", to=3).current == 3  # --to may name a rejected one
    assert store.get("s").status_of(3) == "promoted"
    assert store.rollback("s", to=1).current == 1
    assert store.rollback("s", to=2).current == 2  # forward again is fine
    with pytest.raises(SkillNotFoundError, match="no revision 9"):
        store.rollback("s", to=9)
    assert store.get("s").current == 2
    assert_same_tensors(store.read_adapter("s").tensors, folder_tensors(adapter("beta")))


def test_rollback_with_a_single_revision_fails(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")
    with pytest.raises(UserError, match="no promoted revision"):
        store.rollback("s")


def test_promote_a_rejected_revision_moves_current_and_lora(
    store: SkillStore, adapter: Adapter, train_adapter: Callable[..., Any]
) -> None:
    store.create("s", adapter("alpha"), kind="style")
    small = train_adapter(config=TrainConfig(steps=1, lora=LoraSpec(r=2, alpha=4, target_modules=("q_proj",))))
    store.add_revision("s", small.adapter_dir, promote=False)
    assert store.get("s").lora.r == 8  # unchanged while rejected
    manifest = store.promote("s", 2, note="reviewed")
    assert manifest.current == 2 and manifest.lora == LoraSpec(r=2, alpha=4, target_modules=("q_proj",))
    assert store.get("s") == manifest
    assert manifest.history[-1].action == "promote" and manifest.history[-1].note == "reviewed"
    assert store.rollback("s").lora.r == 8
    with pytest.raises(SkillNotFoundError):
        store.promote("s", 3)
    # a promoting add_revision moves the manifest's LoRA shape too
    store.add_revision("s", small.adapter_dir)
    assert store.get("s").lora.r == 2 and store.get("s").current == 3


def test_delete(store: SkillStore, adapter: Adapter) -> None:
    store.create("gone", adapter("alpha"), kind="style")
    store.create("kept", adapter("beta"), kind="style")
    store.delete("gone")
    assert skill_names(store) == {"kept"}
    assert root_entries(store) == {"kept"}
    assert staged_leftovers(store) == []
    with pytest.raises(SkillNotFoundError):
        store.get("gone")
    with pytest.raises(SkillNotFoundError):
        store.delete("gone")
    store.read_adapter("kept")
    # the name is free again
    store.create("gone", adapter("gamma"), kind="style")
    assert store.get("gone").current == 1


def test_unknown_skill_and_revision(store: SkillStore, adapter: Adapter) -> None:
    with pytest.raises(SkillNotFoundError):
        store.get("absent")
    with pytest.raises(SkillNotFoundError):
        store.read_adapter("absent")
    store.create("s", adapter("alpha"), kind="style")
    with pytest.raises(SkillNotFoundError, match="no revision 2"):
        store.read_adapter("s", 2)
    with pytest.raises(InvalidSkillNameError):
        store.get("../s")


# ------------------------------------------------------------------------------------------------ export / import


def test_export_then_import_into_a_fresh_store(three_revisions: SkillStore, tmp_path: Path) -> None:
    archive = three_revisions.export("multi", tmp_path / "out" / "multi.tar.gz")
    assert archive.is_file()
    fresh = SkillStore(tmp_path / "elsewhere", base_fingerprint=three_revisions.base_fingerprint)
    imported = fresh.import_archive(archive)

    assert imported == three_revisions.get("multi") == fresh.get("multi")
    assert [h.model_dump() for h in fresh.history("multi")] == [
        h.model_dump() for h in three_revisions.history("multi")
    ]
    for number in (1, 2, 3):
        original = three_revisions.read_adapter("multi", number)
        copy = fresh.read_adapter("multi", number)
        assert_same_tensors(copy.tensors, original.tensors)
        assert copy.record == original.record
        for name in (CONFIG, WEIGHTS):
            assert (copy.path / name).read_bytes() == (original.path / name).read_bytes()
    assert staged_leftovers(fresh) == []


def test_export_only_holds_the_store_files(three_revisions: SkillStore, tmp_path: Path) -> None:
    archive = three_revisions.export("multi", tmp_path / "multi.tar.gz")
    with tarfile.open(archive) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
    expected = ["multi/manifest.json"] + [
        f"multi/revs/{n}/{f}" for n in (1, 2, 3) for f in (CONFIG, WEIGHTS, "revision.json")
    ]
    assert names == sorted(expected)


def test_import_name_clash(three_revisions: SkillStore, adapter: Adapter, tmp_path: Path) -> None:
    archive = three_revisions.export("multi", tmp_path / "multi.tar.gz")
    other = SkillStore(tmp_path / "other", base_fingerprint=three_revisions.base_fingerprint)
    other.create("multi", adapter("gamma"), kind="domain")
    before = other.get("multi")
    with pytest.raises(SkillExistsError, match="multi"):
        other.import_archive(archive)
    assert other.get("multi") == before
    assert_same_tensors(other.read_adapter("multi").tensors, folder_tensors(adapter("gamma")))
    assert staged_leftovers(other) == []

    replaced = other.import_archive(archive, replace=True)
    assert replaced == three_revisions.get("multi") == other.get("multi")
    assert len(other.history("multi")) == 3
    assert_same_tensors(other.read_adapter("multi").tensors, three_revisions.read_adapter("multi").tensors)
    assert root_entries(other) == {"multi"}
    assert staged_leftovers(other) == []


def test_exporting_a_corrupt_skill_is_refused(three_revisions: SkillStore, tmp_path: Path) -> None:
    weights = three_revisions.revision_dir("multi", 1) / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(InvalidAdapterError, match="checksum"):
        three_revisions.export("multi", tmp_path / "multi.tar.gz")
    assert not (tmp_path / "multi.tar.gz").exists()


# ------------------------------------------------------------------------------------------------ base fingerprints


def _assert_names_both(error: BaseMismatchError, expected: str, loaded: str) -> None:
    assert expected in str(error) and loaded in str(error)
    assert isinstance(error, UserError)


def test_create_for_another_base_is_refused(store: SkillStore, adapter: Adapter) -> None:
    with pytest.raises(BaseMismatchError) as info:
        store.create("s", adapter("alpha"), kind="style", base_fingerprint=OTHER_BASE)
    _assert_names_both(info.value, OTHER_BASE, store.base_fingerprint or "")
    assert root_entries(store) == set()


def test_add_revision_with_another_base_is_refused(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")
    before = store.get("s")
    other = SkillStore(store.root, base_fingerprint=OTHER_BASE)
    with pytest.raises(BaseMismatchError) as info:
        other.add_revision("s", adapter("beta"))
    _assert_names_both(info.value, store.base_fingerprint or "", OTHER_BASE)
    assert store.get("s") == before
    assert sorted(p.name for p in (store.skill_dir("s") / "revs").iterdir()) == ["1"]


def test_read_adapter_with_another_base_is_refused(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")
    other = SkillStore(store.root, base_fingerprint=OTHER_BASE)
    assert skill_names(other) == {"s"}  # listing does not need the same base
    with pytest.raises(BaseMismatchError) as info:
        other.read_adapter("s")
    _assert_names_both(info.value, store.base_fingerprint or "", OTHER_BASE)
    with pytest.raises(BaseMismatchError):
        other.rollback("s", to=1)


def test_import_for_another_base_is_refused(store: SkillStore, adapter: Adapter, tmp_path: Path) -> None:
    store.create("s", adapter("alpha"), kind="style")
    archive = store.export("s", tmp_path / "s.tar.gz")
    other = SkillStore(tmp_path / "other", base_fingerprint=OTHER_BASE)
    with pytest.raises(BaseMismatchError) as info:
        other.import_archive(archive)
    _assert_names_both(info.value, store.base_fingerprint or "", OTHER_BASE)
    assert root_entries(other) == set() and staged_leftovers(other) == []


def test_store_without_fingerprint_lists_but_refuses_writes(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")
    blind = SkillStore(store.root)
    assert skill_names(blind) == {"s"}
    assert blind.history("s")[0].current
    with pytest.raises(UserError, match="without a base fingerprint"):
        blind.create("t", adapter("beta"), kind="style")
    assert root_entries(blind) == {"s"}
    # an explicit fingerprint is enough to write
    blind.create("t", adapter("beta"), kind="style", base_fingerprint=store.base_fingerprint)
    assert skill_names(store) == {"s", "t"}


# ------------------------------------------------------------------------------------------------ bad files


@pytest.fixture
def two_skills(store: SkillStore, adapter: Adapter) -> SkillStore:
    """'good' (one revision) and 'victim' (two revisions) in one store."""
    store.create("good", adapter("gamma"), kind="domain")
    store.create("victim", adapter("alpha"), kind="style")
    store.add_revision("victim", adapter("beta"))
    return store


def test_truncated_weights_raise_corrupt_skill_naming_it(two_skills: SkillStore) -> None:
    weights = two_skills.revision_dir("victim") / WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptSkillError) as info:
        two_skills.read_adapter("victim")
    assert "'victim'" in str(info.value) and "checksum" in str(info.value)
    assert "rollback" in str(info.value)  # the hint says what to do
    assert isinstance(info.value, OperatorError)
    # the store is still consistent: the manifest, the older revision and the other skill all read fine
    assert skill_names(two_skills) == {"good", "victim"}
    assert two_skills.get("victim").current == 2
    two_skills.read_adapter("victim", 1)
    two_skills.read_adapter("good")
    problems = two_skills.verify("victim")
    assert len(problems) == 1 and "revision 2" in problems[0]
    assert two_skills.verify("good") == []
    # and the advertised fix works
    two_skills.rollback("victim")
    two_skills.read_adapter("victim")


def test_deleted_weights_raise_corrupt_skill(two_skills: SkillStore) -> None:
    (two_skills.revision_dir("victim") / WEIGHTS).unlink()
    with pytest.raises(CorruptSkillError, match="missing"):
        two_skills.read_adapter("victim")
    two_skills.read_adapter("good")


def test_garbage_manifest_is_reported_not_hidden(two_skills: SkillStore) -> None:
    (two_skills.skill_dir("victim") / "manifest.json").write_bytes(b"\x00{not json at all")
    with pytest.raises(CorruptSkillError, match="victim"):
        two_skills.get("victim")
    scan = two_skills.scan()
    assert [m.name for m in scan.skills] == ["good"]
    assert [p.name for p in scan.problems] == ["victim"]
    assert "manifest.json" in scan.problems[0].error
    assert skill_names(two_skills) == {"good"}
    two_skills.read_adapter("good")
    # a write to another skill still works, and deleting the broken one clears the problem
    two_skills.delete("victim")
    assert two_skills.scan().problems == []


def test_manifest_of_another_skill_is_corrupt(two_skills: SkillStore) -> None:
    manifest = json.loads((two_skills.skill_dir("good") / "manifest.json").read_text())
    (two_skills.skill_dir("victim") / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptSkillError, match="holds a manifest for 'good'"):
        two_skills.get("victim")
    assert skill_names(two_skills) == {"good"}


def test_manifest_naming_a_missing_revision(two_skills: SkillStore) -> None:
    shutil.rmtree(two_skills.skill_dir("victim") / "revs" / "1")
    with pytest.raises(CorruptSkillError, match="revision 1"):
        two_skills.revision("victim", 1)
    lost, intact = two_skills.history("victim")  # listed with its problem, not failing the whole history
    assert lost.revision is None and "revision 1" in str(lost.problem) and intact.problem is None
    two_skills.read_adapter("victim")  # the current revision is intact


def test_stray_folders_are_problems_not_crashes(two_skills: SkillStore) -> None:
    (two_skills.root / "Not A Skill").mkdir()
    (two_skills.root / "empty").mkdir()
    scan = two_skills.scan()
    assert {m.name for m in scan.skills} == {"good", "victim"}
    assert {p.name for p in scan.problems} == {"Not A Skill", "empty"}


# ------------------------------------------------------------------------------------------------ bad adapter folders


def test_adapter_folder_with_pickle_weights_is_refused(store: SkillStore, adapter: Adapter) -> None:
    folder = adapter("alpha")
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsafeArchiveError, match="pickle"):
        store.create("s", folder, kind="style")
    assert root_entries(store) == set()


def test_adapter_folder_with_a_link_is_refused(store: SkillStore, adapter: Adapter, tmp_path: Path) -> None:
    folder = adapter("alpha")
    (tmp_path / "elsewhere.json").write_text("{}")
    (folder / "extra.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(UnsafeArchiveError, match="link"):
        store.create("s", folder, kind="style")
    assert root_entries(store) == set()


@pytest.mark.parametrize("missing", [CONFIG, WEIGHTS])
def test_adapter_folder_missing_a_file_is_refused(store: SkillStore, adapter: Adapter, missing: str) -> None:
    store.create("keep", adapter("beta"), kind="style")
    folder = adapter("alpha")
    (folder / missing).unlink()
    with pytest.raises(InvalidAdapterError, match=missing):
        store.create("s", folder, kind="style")
    with pytest.raises(InvalidAdapterError, match=missing):
        store.add_revision("keep", folder)
    assert skill_names(store) == {"keep"} and root_entries(store) == {"keep"}
    assert store.history("keep")[-1].revision.number == 1
    store.read_adapter("keep")


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda f: (f / CONFIG).write_text("{nope"), "not valid JSON"),
        (lambda f: (f / CONFIG).write_text("[1, 2]"), "not a JSON object"),
        (lambda f: (f / CONFIG).write_text(json.dumps({"peft_type": "IA3"})), "not a LoRA config"),
        (lambda f: (f / WEIGHTS).write_bytes(b"garbage"), "safetensors"),
        (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:100]), "safetensors"),
    ],
)
def test_broken_adapter_folders_are_refused(
    store: SkillStore, adapter: Adapter, damage: Callable[[Path], Any], needle: str
) -> None:
    folder = adapter("alpha")
    damage(folder)
    with pytest.raises(InvalidAdapterError, match=needle):
        store.create("s", folder, kind="style")
    assert root_entries(store) == set()


def test_adapter_dir_that_is_not_a_folder(store: SkillStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidAdapterError, match="not a folder"):
        store.create("s", tmp_path / "nowhere", kind="style")


# ------------------------------------------------------------------------------------------------ hostile archives

Member = tuple[tarfile.TarInfo, bytes | None]


def file_member(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link_member(name: str, target: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def write_tar(path: Path, members: list[Member], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def members_of(archive: Path, rename: tuple[str, str] | None = None) -> list[Member]:
    """The regular-file members of an export, optionally with the top folder renamed."""
    out = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            name = member.name
            if rename:
                name = name.replace(rename[0] + "/", rename[1] + "/", 1)
            out.append(file_member(name, handle.read()))
    return out


@pytest.fixture
def hostile(store: SkillStore, adapter: Adapter, tmp_path: Path) -> dict[str, Any]:
    """A store with one skill 'keep', plus the members of a valid export of another skill named 'incoming'."""
    store.create("keep", adapter("beta"), kind="style")
    source = SkillStore(tmp_path / "source", base_fingerprint=store.base_fingerprint)
    source.create("incoming", adapter("alpha"), kind="style")
    valid = source.export("incoming", tmp_path / "valid.tar.gz")
    return {"store": store, "members": members_of(valid), "valid": valid, "dir": tmp_path / "archives"}


def _assert_refused_cleanly(
    store: SkillStore, archive: Path, error: type[Exception], needle: str | None = None, *, names_archive: bool = True
) -> None:
    before_entries = root_entries(store)
    before_manifest = store.get("keep")
    with pytest.raises(error) as info:
        store.import_archive(archive)
    assert isinstance(info.value, UserError)
    if needle:  # matched without the archive's own name, which could contain the needle ("link.tar.gz")
        assert re.search(needle, str(info.value).replace(archive.name, "")), str(info.value)
    if names_archive:
        assert archive.name in str(info.value)
    assert skill_names(store) == {"keep"}
    assert root_entries(store) == before_entries
    assert not (store.root / "incoming").exists()
    assert staged_leftovers(store) == []
    assert store.get("keep") == before_manifest
    store.read_adapter("keep")


def test_hostile_fixture_archive_is_valid(hostile: dict[str, Any]) -> None:
    """Control: the members the hostile archives are built from import fine when left alone."""
    store = hostile["store"]
    hostile["dir"].mkdir()
    store.import_archive(write_tar(hostile["dir"] / "clean.tar.gz", hostile["members"]))
    assert skill_names(store) == {"keep", "incoming"}
    store.read_adapter("incoming")


@pytest.mark.parametrize("position", ["first", "last"])
@pytest.mark.parametrize(
    "member_name", ["../x", "incoming/../../x", "incoming/revs/../../../x", "../../../../x", "..\\x"]
)
def test_archive_member_with_dotdot_path(hostile: dict[str, Any], member_name: str, position: str) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    bad = file_member(member_name, b"escaped")
    members = [bad, *hostile["members"]] if position == "first" else [*hostile["members"], bad]
    _assert_refused_cleanly(store, write_tar(directory / "dotdot.tar.gz", members), UnsafeArchiveError, "'\\.\\.'")
    # nothing landed anywhere above the staging folder
    tmp_root = directory.parent
    assert [p for p in tmp_root.rglob("x") if p.is_file()] == []
    assert not (tmp_root.parent / "x").exists()


def test_archive_member_with_absolute_path(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    target = directory / "absolute-target"
    archive = write_tar(directory / "abs.tar.gz", [*hostile["members"], file_member(str(target), b"escaped")])
    with tarfile.open(archive) as tar:  # the member really carries the absolute name
        assert tar.getmembers()[-1].name.startswith("/")
    _assert_refused_cleanly(store, archive, UnsafeArchiveError, "absolute")
    assert not target.exists()


@pytest.mark.parametrize(
    ("kind", "link_target"),
    [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.SYMTYPE, "../../outside"), (tarfile.LNKTYPE, "incoming/manifest.json")],
)
def test_archive_with_link_members(hostile: dict[str, Any], kind: bytes, link_target: str) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    members = [m for m in hostile["members"] if not m[0].name.endswith("revs/1/" + CONFIG)]
    members.append(link_member("incoming/revs/1/" + CONFIG, link_target, kind))
    _assert_refused_cleanly(store, write_tar(directory / "link.tar.gz", members), UnsafeArchiveError, "link")
    assert not (directory.parent / "outside").exists()


def test_archive_with_a_device_or_fifo_member(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    fifo = tarfile.TarInfo("incoming/revs/1/revision.json")
    fifo.type = tarfile.FIFOTYPE
    members = [*hostile["members"], (fifo, None)]
    _assert_refused_cleanly(store, write_tar(directory / "fifo.tar.gz", members), UnsafeArchiveError, "regular")


@pytest.mark.parametrize("name", ["incoming/revs/1/adapter_model.bin", "incoming/revs/1/weights.pt"])
def test_archive_with_pickle_member(hostile: dict[str, Any], name: str) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    archive = write_tar(directory / "pickle.tar.gz", [*hostile["members"], file_member(name, b"\x80\x04evil")])
    _assert_refused_cleanly(store, archive, UnsafeArchiveError, "pickle")


@pytest.mark.parametrize(
    "name", ["incoming/revs/1/notes.txt", "incoming/run.py", "incoming/revs/x/adapter_config.json", "incoming"]
)
def test_archive_with_an_unexpected_file(hostile: dict[str, Any], name: str) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    archive = write_tar(directory / "extra.tar.gz", [*hostile["members"], file_member(name, b"surprise")])
    _assert_refused_cleanly(store, archive, UnsafeArchiveError, "unexpected member")


def test_archive_with_two_skills(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    second = members_of(hostile["valid"], rename=("incoming", "second"))
    archive = write_tar(directory / "two.tar.gz", [*hostile["members"], *second])
    _assert_refused_cleanly(store, archive, UnsafeArchiveError, "two skills")
    assert not (store.root / "second").exists()


def test_archive_with_a_bad_top_folder_name(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    archive = write_tar(directory / "upper.tar.gz", [file_member("Incoming/manifest.json", b"{}")])
    _assert_refused_cleanly(store, archive, UnsafeArchiveError, "'Incoming'")


@pytest.mark.parametrize("content", [b"this is not a tar archive\n" * 20, b"", gzip.compress(b"not a tar either")])
def test_non_tar_file(hostile: dict[str, Any], content: bytes) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    archive = directory / "fake.tar.gz"
    archive.write_bytes(content)
    _assert_refused_cleanly(store, archive, InvalidAdapterError, "tar")


def test_archive_without_manifest(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    members = [m for m in hostile["members"] if not m[0].name.endswith("manifest.json")]
    _assert_refused_cleanly(store, write_tar(directory / "nomanifest.tar.gz", members), InvalidAdapterError, "manifest")


def test_archive_missing_a_revision(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    members = [m for m in hostile["members"] if "/revs/" not in m[0].name]
    _assert_refused_cleanly(store, write_tar(directory / "norev.tar.gz", members), InvalidAdapterError, "missing")


def test_archive_with_tampered_weights(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    members = []
    for info, data in hostile["members"]:
        if info.name.endswith(WEIGHTS) and data is not None:
            tampered = bytearray(data)
            tampered[-1] ^= 0xFF  # still a well-formed safetensors file, but not the one the checksum names
            info, data = file_member(info.name, bytes(tampered))
        members.append((info, data))
    _assert_refused_cleanly(store, write_tar(directory / "tampered.tar.gz", members), InvalidAdapterError, "checksum")


def test_archive_with_garbage_manifest(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    members = [m for m in hostile["members"] if not m[0].name.endswith("manifest.json")]
    members.append(file_member("incoming/manifest.json", b'{"name": "incoming"}'))
    _assert_refused_cleanly(
        store, write_tar(directory / "badmanifest.tar.gz", members), InvalidAdapterError, "manifest.json"
    )


def test_archive_revision_without_checksums_is_refused(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    members = []
    for info, data in hostile["members"]:
        if info.name.endswith("revision.json") and data is not None:
            info, data = file_member(info.name, json.dumps(json.loads(data) | {"files": {}}).encode())
        members.append((info, data))
    _assert_refused_cleanly(store, write_tar(directory / "nochecksums.tar.gz", members), InvalidAdapterError)


def test_archive_whose_manifest_names_another_skill(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    members = []
    for info, data in hostile["members"]:
        if info.name == "incoming/manifest.json" and data is not None:
            payload = json.loads(data) | {"name": "keep"}
            info, data = file_member(info.name, json.dumps(payload).encode())
        members.append((info, data))
    _assert_refused_cleanly(
        store, write_tar(directory / "renamed.tar.gz", members), InvalidAdapterError, "holds a manifest for 'keep'"
    )


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.one_of(
        st.binary(max_size=4096),
        st.binary(max_size=4096).map(gzip.compress),
        st.binary(min_size=512, max_size=2048).map(lambda b: b"\x1f\x8b" + b),
    )
)
def test_import_of_random_bytes_only_raises_habitloop_errors(hostile: dict[str, Any], payload: bytes) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir(exist_ok=True)
    archive = directory / "random.tar.gz"
    archive.write_bytes(payload)
    with pytest.raises(HabitloopError):
        store.import_archive(archive)
    assert skill_names(store) == {"keep"}
    assert root_entries(store) == {"keep"}
    assert staged_leftovers(store) == []


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_archive_raises_a_habitloop_error(hostile: dict[str, Any], keep: float) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    data = hostile["valid"].read_bytes()
    archive = directory / "truncated.tar.gz"
    archive.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(HabitloopError):
        store.import_archive(archive)
    assert skill_names(store) == {"keep"}
    assert staged_leftovers(store) == []


def test_truncated_plain_tar_raises_a_habitloop_error(hostile: dict[str, Any]) -> None:
    store, directory = hostile["store"], hostile["dir"]
    directory.mkdir()
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        for info, data in hostile["members"]:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    # cut inside the data of the first member: its header is complete, its bytes are not
    first = hostile["members"][0][0]
    assert first.size > 100
    archive = directory / "truncated.tar"
    archive.write_bytes(plain.getvalue()[: 512 + first.size // 2])
    with pytest.raises(HabitloopError):
        store.import_archive(archive)
    assert skill_names(store) == {"keep"}
    assert staged_leftovers(store) == []


# ------------------------------------------------------------------------------------------------ crash safety


def test_orphan_revision_is_invisible_and_never_reused(store: SkillStore, adapter: Adapter) -> None:
    store.create("s", adapter("alpha"), kind="style")
    store.add_revision("s", adapter("beta"))
    revs = store.skill_dir("s") / "revs"
    # a writer that crashed between its two renames leaves revs/3 that no manifest names
    shutil.copytree(revs / "2", revs / "3")
    assert [h.revision.number for h in store.history("s")] == [1, 2]
    assert store.get("s").current == 2
    with pytest.raises(SkillNotFoundError, match="no revision 3"):
        store.read_adapter("s", 3)
    with pytest.raises(SkillNotFoundError):
        store.promote("s", 3)

    record = store.add_revision("s", adapter("gamma"))
    assert record.number == 4
    assert [h.revision.number for h in store.history("s")] == [1, 2, 4]
    assert_same_tensors(store.read_adapter("s").tensors, folder_tensors(adapter("gamma")))
    # the orphan is left alone, not overwritten
    assert_same_tensors(folder_tensors(revs / "3"), folder_tensors(adapter("beta")))


def test_debris_of_a_crashed_writer_is_cleaned_on_next_write(store: SkillStore, adapter: Adapter) -> None:
    debris = store.root / ".tmp" / "deadbeef" / "revs" / "1"
    debris.mkdir(parents=True)
    (debris / WEIGHTS).write_bytes(b"half written")
    (store.root / ".trash" / "old-1234").mkdir(parents=True)
    assert skill_names(store) == set()  # readers ignore it
    store.create("s", adapter("alpha"), kind="style")
    assert staged_leftovers(store) == []
    assert not (store.root / ".trash" / "old-1234").exists()


def test_store_lock_timeout(store: SkillStore, adapter: Adapter) -> None:
    impatient = SkillStore(store.root, base_fingerprint=store.base_fingerprint, lock_timeout=0.1)
    holder = FileLock(str(store.root / ".lock"))
    holder.acquire()
    try:
        with pytest.raises(StoreLockedError, match="locked"):
            impatient.create("s", adapter("alpha"), kind="style")
    finally:
        holder.release()
    impatient.create("s", adapter("alpha"), kind="style")
    assert skill_names(store) == {"s"}


# ------------------------------------------------------------------------------------------------ concurrency


def test_concurrent_writers_get_distinct_revision_numbers(store: SkillStore, adapter: Adapter) -> None:
    store.create("shared", adapter("alpha"), kind="style")
    writers = 3
    per_writer = 3
    folders = [adapter("beta") for _ in range(writers)]
    barrier = threading.Barrier(writers)
    numbers: list[list[int]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        own = SkillStore(store.root, base_fingerprint=store.base_fingerprint)  # its own lock object
        try:
            barrier.wait()
            for _ in range(per_writer):
                numbers[index].append(own.add_revision("shared", folders[index], note=f"writer {index}").number)
        except BaseException as error:  # re-raised in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    flat = sorted(n for per in numbers for n in per)
    assert flat == list(range(2, 2 + writers * per_writer))
    manifest = store.get("shared")
    assert manifest.revision_numbers() == [1, *flat]  # no event was lost to a lost update
    assert manifest.current == max(flat)
    assert len(manifest.history) == 1 + writers * per_writer
    assert store.verify("shared") == []
    assert staged_leftovers(store) == []


# A writer in another process: imports first (torch is slow to import), says it is ready, waits for the go file so
# that both processes write at the same moment, then prints the revision numbers it got.
_WRITER = """
import json, pathlib, sys, time
import safetensors.torch  # noqa: F401  (import torch before the race starts)
from skills import SkillStore
root, fingerprint, folder, count, go = sys.argv[1:]
store = SkillStore(root, base_fingerprint=fingerprint)
print("ready", flush=True)
while not pathlib.Path(go).exists():
    time.sleep(0.005)
print(json.dumps([store.add_revision("shared", folder).number for _ in range(int(count))]), flush=True)
"""


def test_concurrent_processes_get_distinct_revision_numbers(
    store: SkillStore, adapter: Adapter, tmp_path: Path
) -> None:
    store.create("shared", adapter("alpha"), kind="style")
    go = tmp_path / "go"
    per_writer = 3
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WRITER,
                str(store.root),
                str(store.base_fingerprint),
                str(adapter(w)),
                str(per_writer),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in ("beta", "gamma")
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready", writer.stderr.read() if writer.stderr else ""
        go.touch()
        outputs = [writer.communicate(timeout=120) for writer in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
    assert [writer.returncode for writer in writers] == [0, 0], [err for _, err in outputs]
    numbers = sorted(n for out, _ in outputs for n in json.loads(out.strip().splitlines()[-1]))
    assert numbers == list(range(2, 2 + 2 * per_writer))
    manifest = store.get("shared")
    assert manifest.revision_numbers() == [1, *numbers]
    assert store.verify("shared") == []
    assert staged_leftovers(store) == []
