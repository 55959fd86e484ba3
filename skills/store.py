"""The skill store: skills as persistent, versioned state on disk.

Layout under `root` (normally `$HABITLOOP_HOME/skills`):

    <name>/manifest.json        identity + `current` pointer + history; replaced atomically (temp file + rename)
    <name>/revs/<n>/            immutable: adapter_config.json, adapter_model.safetensors (PEFT's own format,
                                so vLLM / LoRAX can serve it unchanged) and revision.json (provenance, evaluation,
                                checksums)
    .lock                       one writer at a time (readers never need it: every write is a rename)
    .generation                 a counter bumped after every write, so readers that cache (the router) notice
    .tmp/  .trash/              staging and deletion areas; leftovers of a crashed writer are cleaned on next write

A revision is committed in two renames: its folder into `revs/<n>`, then a manifest that names it. A crash between the
two leaves an orphan folder that no manifest names: invisible, and never reused (numbers only grow).
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from filelock import FileLock, Timeout
from pydantic import BaseModel, ValidationError

from skills.adapter_check import check_adapter
from skills.errors import (
    BaseMismatchError,
    CorruptSkillError,
    InvalidAdapterError,
    InvalidSkillNameError,
    SkillExistsError,
    SkillNotFoundError,
    StoreLockedError,
    UnsafeArchiveError,
    UserError,
)
from skills.files import (
    ADAPTER_CONFIG,
    ADAPTER_FILES,
    ADAPTER_WEIGHTS,
    ARCHIVE_ERRORS,
    MAX_SKILL_ARCHIVE_BYTES,
    ArchiveBudget,
    atomic_write_bytes,
    atomic_write_json,
    check_adapter_dir,
    check_archive_member,
    extract_member,
    fsync_dir,
    library_versions,
    open_archive,
    read_safetensors,
    sha256_file,
)
from skills.manifest import (
    Evaluation,
    HistoryEvent,
    LoraSpec,
    Provenance,
    RevisionRecord,
    RevisionStatus,
    RoutingVector,
    SkillManifest,
    skill_kinds,
    validate_skill_name,
)

MANIFEST = "manifest.json"
REVISION = "revision.json"
GENERATION = ".generation"
_REVISION_FILES = (REVISION, *ADAPTER_FILES)
_M = TypeVar("_M", bound=BaseModel)


class HistoryEntry(BaseModel):
    """One committed revision as `history` shows it. A revision the manifest names but whose record cannot be read
    (its folder lost, say) is still listed, with `revision` None and `problem` saying what is wrong and the fix:
    one lost revision never hides the others."""

    number: int
    revision: RevisionRecord | None
    status: RevisionStatus
    current: bool
    problem: str | None = None


class SkillProblem(BaseModel):
    """A folder in the store that cannot be read as a skill, and what to do about it."""

    name: str
    path: str
    error: str


class StoreScan(BaseModel):
    """Every readable skill, and every unreadable one with its reason (one bad skill never hides the others)."""

    skills: list[SkillManifest]
    problems: list[SkillProblem]


@dataclass(frozen=True)
class AdapterWeights:
    """A revision read from disk and verified: what residency keeps warm in RAM."""

    skill: str
    record: RevisionRecord
    config: dict[str, Any]
    tensors: dict[str, Any]  # name -> torch.Tensor on CPU, keys in PEFT's saved format
    path: Path

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


class SkillStore:
    """Skills under one folder: create, add revisions, read, roll back, delete, export and import.

    `base_fingerprint` is the fingerprint of the base model loaded in this process; when given, every write and
    every adapter read checks that the skill was made for that base. Listing works without it.
    """

    def __init__(self, root: Path | str, *, base_fingerprint: str | None = None, lock_timeout: float = 60.0) -> None:
        self.root = Path(root).expanduser()
        self.base_fingerprint = base_fingerprint
        self.lock_timeout = lock_timeout
        self.root.mkdir(parents=True, exist_ok=True)
        # One lock object per store: it counts re-entries, so nested writes in one process do not deadlock.
        self._lock = FileLock(str(self.root / ".lock"), timeout=lock_timeout)

    def __repr__(self) -> str:
        return f"SkillStore({str(self.root)!r}, base_fingerprint={self.base_fingerprint!r})"

    # ------------------------------------------------------------------------------------------------ reading

    def skill_dir(self, name: str) -> Path:
        """The folder of skill `name` (validated: a name can never point outside the store)."""
        return self.root / validate_skill_name(name)

    def generation(self) -> int:
        """A counter that every write through this API (any process) increases: a cheap "did anything change?" for
        readers that cache what they read, such as the router's index. 0 for a store never written to."""
        try:
            return int((self.root / GENERATION).read_text() or 0)
        except (OSError, ValueError):
            return 0

    def exists(self, name: str) -> bool:
        return (self.skill_dir(name) / MANIFEST).is_file()

    def get(self, name: str) -> SkillManifest:
        """The manifest of `name`; `SkillNotFoundError` or `CorruptSkillError` when it cannot be read."""
        path = self.skill_dir(name) / MANIFEST
        if not path.is_file():
            raise SkillNotFoundError(f"no skill named {name!r} in {self.root}", hint="see `habitloop skills list`")
        return self._read_manifest(name, path)

    def list(self) -> list[SkillManifest]:
        """Every readable skill, sorted by name. Unreadable ones are reported by `scan()`."""
        return self.scan().skills

    def scan(self) -> StoreScan:
        """Every usable skill, and every folder that is not one, with the reason and the fix.

        Usable: a readable manifest naming this folder, and its current revision's files present. Cheap (one small
        read and three stats per skill: the records, which carry routing vectors, are not parsed, and checksums are
        verified when an adapter is loaded), because the router rescans after every store write (10,000 skills:
        parsing every current record made that rebuild 6x slower). A skill of another base is listed (listing needs
        no base); the router leaves it out."""
        skills: list[SkillManifest] = []
        problems: list[SkillProblem] = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                skills.append(self._usable(entry.name))
            except (CorruptSkillError, SkillNotFoundError, UserError) as error:
                problems.append(SkillProblem(name=entry.name, path=str(entry), error=str(error)))
        return StoreScan(skills=skills, problems=problems)

    def _usable(self, name: str) -> SkillManifest:
        try:
            validate_skill_name(name)
        except InvalidSkillNameError as error:
            raise UserError(
                f"{name!r} is not a skill folder: {error.message}", hint=f"move it out of {self.root}"
            ) from error
        if not (self.skill_dir(name) / MANIFEST).is_file():
            raise CorruptSkillError(
                f"skill folder {name!r} has no {MANIFEST}", hint=f"remove it with `habitloop skills delete {name}`"
            )
        manifest = self.get(name)
        folder = self.skill_dir(name) / "revs" / str(manifest.current)
        if not (folder / REVISION).is_file():
            raise self._lost(name, manifest.current, manifest)
        for file_name in ADAPTER_FILES:
            if not (folder / file_name).is_file():
                raise CorruptSkillError(
                    f"skill {name!r} revision {manifest.current}: {file_name} is missing",
                    hint=f"roll back with `habitloop skills rollback {name}`, or delete it",
                )
        return manifest

    def revision(self, name: str, number: int | None = None) -> RevisionRecord:
        """The record of a committed revision (the current one by default)."""
        manifest = self.get(name)
        number = manifest.current if number is None else number
        if number not in manifest.revision_numbers():
            raise SkillNotFoundError(
                f"skill {name!r} has no revision {number}",
                hint=f"its revisions are {manifest.revision_numbers()}",
            )
        return self._read_revision(name, number, manifest)

    def revision_dir(self, name: str, number: int | None = None) -> Path:
        """The folder of a committed revision: a PEFT adapter folder other engines can load directly."""
        return self.skill_dir(name) / "revs" / str(self.revision(name, number).number)

    def history(self, name: str) -> builtins.list[HistoryEntry]:
        """Every revision the manifest names, oldest first; one whose record cannot be read is listed with its
        `problem` instead of failing the whole history."""
        manifest = self.get(name)
        entries = []
        for number in manifest.revision_numbers():
            record, problem = None, None
            try:
                record = self._read_revision(name, number, manifest)
            except CorruptSkillError as error:
                problem = str(error)
            entries.append(
                HistoryEntry(
                    number=number,
                    revision=record,
                    status=manifest.status_of(number),
                    current=number == manifest.current,
                    problem=problem,
                )
            )
        return entries

    def read_adapter(self, name: str, number: int | None = None) -> AdapterWeights:
        """Read and verify one revision's adapter: checksums, PEFT config, tensors, base fingerprint."""
        record = self.revision(name, number)
        self._check_base(name, record.base_fingerprint)
        folder = self.skill_dir(name) / "revs" / str(record.number)
        label = f"skill {name!r} revision {record.number}"
        fix = f"roll back with `habitloop skills rollback {name}`, re-import it, or delete it"
        contents: dict[str, bytes] = {}
        for file_name, expected in record.files.items():
            path = folder / file_name
            if not path.is_file():
                raise CorruptSkillError(f"{label}: {file_name} is missing", hint=fix)
            # Checksum and parse the same bytes, so nothing can change between the check and the load.
            contents[file_name] = path.read_bytes()
            if hashlib.sha256(contents[file_name]).hexdigest() != expected:
                raise CorruptSkillError(f"{label}: {file_name} does not match its checksum (corrupt)", hint=fix)
        try:
            check_adapter_dir(folder, label=label)
            config = json.loads(contents[ADAPTER_CONFIG])
            tensors = read_safetensors(folder / ADAPTER_WEIGHTS, label=label, data=contents[ADAPTER_WEIGHTS])
            # A store written before this check may hold a revision with base tensors under matching checksums.
            check_adapter(config, tensors, label=label)
        except ValueError as error:
            raise CorruptSkillError(f"{label}: {ADAPTER_CONFIG} is not JSON: {error}", hint=fix) from error
        except (InvalidAdapterError, UnsafeArchiveError) as error:
            raise CorruptSkillError(str(error.message), hint=fix) from error
        return AdapterWeights(skill=name, record=record, config=config, tensors=tensors, path=folder)

    def verify(self, name: str) -> builtins.list[str]:
        """Problems of every committed revision of `name` (empty when all are intact)."""
        problems = []
        for number in self.get(name).revision_numbers():
            try:
                self.read_adapter(name, number)
            except (CorruptSkillError, BaseMismatchError, SkillNotFoundError) as error:
                problems.append(str(error))
        return problems

    # ------------------------------------------------------------------------------------------------ writing

    def create(
        self,
        name: str,
        adapter_dir: Path | str,
        *,
        kind: str,
        description: str = "",
        tags: Sequence[str] = (),
        base_fingerprint: str | None = None,
        provenance: Provenance | None = None,
        evaluation: Evaluation | None = None,
        routing: RoutingVector | None = None,
    ) -> SkillManifest:
        """Create skill `name` with revision 1 copied from a PEFT LoRA folder (e.g. one `train_lora` wrote).

        `routing`: the centroid of the training prompts' embeddings (see `memory.routing_vector`), for the router."""
        validate_skill_name(name)
        fingerprint = self._fingerprint_for_write(name, base_fingerprint)
        if kind not in skill_kinds():
            raise UserError(
                f"unknown skill kind {kind!r}",
                hint=f"use one of {', '.join(sorted(skill_kinds()))}, or register_skill_kind() first",
            )
        with self._write_lock():
            if (self.root / name).exists():
                raise SkillExistsError(
                    f"a skill named {name!r} already exists",
                    hint="add a revision to it, pick another name, or delete it first",
                )
            staging = self._staging_dir()
            record = self._stage_revision(
                staging / "revs" / "1", Path(adapter_dir), name, 1, None, fingerprint, provenance, evaluation, routing
            )
            try:
                manifest = SkillManifest(
                    name=name,
                    kind=kind,
                    description=description,
                    tags=tuple(tags),
                    base_fingerprint=fingerprint,
                    lora=record.lora,
                    current=1,
                    history=(HistoryEvent(action="create", revision=1),),
                )
            except ValidationError as error:
                shutil.rmtree(staging, ignore_errors=True)
                raise UserError(f"cannot create skill {name!r}: {_one_line(error)}") from error
            atomic_write_json(staging / MANIFEST, manifest.model_dump(mode="json"))
            staging.rename(self.root / name)
            fsync_dir(self.root)
        return manifest

    def add_revision(
        self,
        name: str,
        adapter_dir: Path | str,
        *,
        parent: int | None = None,
        provenance: Provenance | None = None,
        evaluation: Evaluation | None = None,
        promote: bool = True,
        note: str = "",
        routing: RoutingVector | None = None,
    ) -> RevisionRecord:
        """Commit a new immutable revision; move `current` to it when `promote`, else keep it as rejected."""
        with self._write_lock():
            manifest = self.get(name)
            fingerprint = self._fingerprint_for_write(name, manifest.base_fingerprint)
            if parent is not None and parent not in manifest.revision_numbers():
                raise SkillNotFoundError(
                    f"skill {name!r} has no revision {parent} to be the parent",
                    hint=f"its revisions are {manifest.revision_numbers()}",
                )
            revs = self.skill_dir(name) / "revs"
            number = 1 + max((int(p.name) for p in revs.iterdir() if p.name.isdigit()), default=0)
            staging = self._staging_dir()
            record = self._stage_revision(
                staging,
                Path(adapter_dir),
                name,
                number,
                manifest.current if parent is None else parent,
                fingerprint,
                provenance,
                evaluation,
                routing,
            )
            staging.rename(revs / str(number))
            fsync_dir(revs)
            event = HistoryEvent(action="promote" if promote else "reject", revision=number, note=note)
            update: dict[str, Any] = {"history": (*manifest.history, event), "updated_at": datetime.now(UTC)}
            if promote:
                update |= {"current": number, "lora": record.lora}
            self._write_manifest(manifest.model_copy(update=update))
        return record

    def promote(self, name: str, number: int, *, note: str = "") -> SkillManifest:
        """Make a committed revision current (e.g. one kept as rejected, after review)."""
        return self._move_pointer(name, number, "promote", note)

    def rollback(self, name: str, to: int | None = None) -> SkillManifest:
        """Point `current` back to revision `to`, or to the newest promoted revision older than the current one."""
        manifest = self.get(name)
        if to is None:
            older = [
                n for n in manifest.revision_numbers() if n < manifest.current and manifest.status_of(n) == "promoted"
            ]
            if not older:
                raise UserError(
                    f"skill {name!r} has no promoted revision older than {manifest.current}",
                    hint="see `habitloop skills history " + name + "` and pass --to N",
                )
            to = older[-1]
        return self._move_pointer(name, to, "rollback", "")

    def delete(self, name: str) -> None:
        """Remove a skill and all its revisions (moved aside first, so a crash never leaves half a skill).

        Reads nothing inside the folder, so a skill whose manifest is garbage or missing is deleted too; the name is
        validated, so nothing outside the store is touched (a link is removed, never followed)."""
        with self._write_lock():
            folder = self.skill_dir(name)
            if not folder.exists() and not folder.is_symlink():
                raise SkillNotFoundError(f"no skill named {name!r} in {self.root}", hint="see `habitloop skills list`")
            trash = self.root / ".trash" / f"{name}-{uuid.uuid4().hex[:8]}"
            trash.parent.mkdir(exist_ok=True)
            folder.rename(trash)
            fsync_dir(self.root)
            if trash.is_dir() and not trash.is_symlink():
                shutil.rmtree(trash)
            else:
                trash.unlink()

    def export(self, name: str, dest: Path | str) -> Path:
        """Write skill `name` with its committed revisions to one `.tar.gz` (written atomically).

        A revision whose record is lost (listed with a `problem` by `history`: its folder gone, say) is left out, and
        so are its events in the archived manifest: the archive is a whole skill that imports cleanly, which is also
        how a lost revision is dropped for good (export, then `import --replace`). Refused: a lost current revision
        (roll back first) and a revision whose record reads but whose files are damaged (checksums)."""
        manifest = self.get(name)
        folder = self.skill_dir(name)
        lost = {e.number for e in self.history(name) if e.problem is not None}
        if manifest.current in lost:
            raise CorruptSkillError(
                f"skill {name!r}: its current revision {manifest.current} is lost; export needs it",
                hint=f"roll back first with `habitloop skills rollback {name}`",
            )
        kept = [number for number in manifest.revision_numbers() if number not in lost]
        for number in kept:
            self._check_staged_revision(folder / "revs" / str(number), name, number, f"skill {name!r}")
        if lost:
            manifest = manifest.model_copy(
                update={"history": tuple(e for e in manifest.history if e.revision not in lost)}
            )
            SkillManifest.model_validate(manifest.model_dump())
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            if lost:  # the manifest as it will be imported: without the lost revisions
                data = json.dumps(manifest.model_dump(mode="json"), indent=2).encode()
                info = tarfile.TarInfo(f"{name}/{MANIFEST}")
                info.size, info.mtime, info.mode = len(data), int((folder / MANIFEST).stat().st_mtime), 0o644
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.add(folder / MANIFEST, arcname=f"{name}/{MANIFEST}")
            for number in kept:
                for file_name in _REVISION_FILES:
                    tar.add(folder / "revs" / str(number) / file_name, arcname=f"{name}/revs/{number}/{file_name}")
        dest = Path(dest)
        atomic_write_bytes(dest, buffer.getvalue())
        return dest

    def import_archive(
        self, archive: Path | str, *, replace: bool = False, budget: ArchiveBudget | None = None
    ) -> SkillManifest:
        """Add a skill from an `export` archive, after checking every member and every file.

        Refused: links, absolute or `..` paths, files other than the store's own, revision folders its manifest does
        not name, pickle weights or bytecode, checksum or safetensors errors, another base's fingerprint, more than
        `budget` unpacked (default `MAX_SKILL_ARCHIVE_BYTES`; a pack passes its own, so that its skill archives count
        against the pack's limit), and an existing name unless `replace`.
        """
        archive = Path(archive)
        label = f"archive {archive.name}"
        budget = budget or ArchiveBudget(label, max_bytes=MAX_SKILL_ARCHIVE_BYTES)
        with self._write_lock():
            staging = self._staging_dir()
            try:
                name = _extract_skill_archive(archive, staging, label=label, budget=budget)
                manifest = self._read_manifest(name, staging / name / MANIFEST)
                self._check_base(name, manifest.base_fingerprint)
                for number in manifest.revision_numbers():
                    self._check_staged_revision(staging / name / "revs" / str(number), name, number, label)
            except CorruptSkillError as error:
                shutil.rmtree(staging, ignore_errors=True)
                raise InvalidAdapterError(f"{label}: {error.message}") from error
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            target = self.root / name
            if target.exists():
                if not replace:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise SkillExistsError(
                        f"a skill named {name!r} already exists", hint="pass replace=True (--replace) to overwrite it"
                    )
                trash = self.root / ".trash" / f"{name}-{uuid.uuid4().hex[:8]}"
                trash.parent.mkdir(exist_ok=True)
                target.rename(trash)
                (staging / name).rename(target)
                fsync_dir(self.root)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                (staging / name).rename(target)
                fsync_dir(self.root)
            shutil.rmtree(staging, ignore_errors=True)
        return manifest

    # ------------------------------------------------------------------------------------------------ internals

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        lock = self._lock
        try:
            lock.acquire()
        except Timeout as error:
            raise StoreLockedError(
                f"the skill store {self.root} is locked by another process",
                hint=f"wait for it to finish, or remove {self.root / '.lock'} if no habitloop process is running",
            ) from error
        try:
            # Holding the lock, anything left in the staging area is the debris of a writer that crashed.
            for leftover in ((self.root / ".tmp"), (self.root / ".trash")):
                if leftover.exists() and lock.lock_counter == 1:
                    shutil.rmtree(leftover, ignore_errors=True)
            yield
            if lock.lock_counter == 1:  # the outermost write finished: tell caching readers
                atomic_write_bytes(self.root / GENERATION, str(self.generation() + 1).encode())
        finally:
            lock.release()

    def _staging_dir(self) -> Path:
        path = self.root / ".tmp" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def _fingerprint_for_write(self, name: str, fingerprint: str | None) -> str:
        fingerprint = fingerprint or self.base_fingerprint
        if not fingerprint:
            raise UserError(
                f"cannot write skill {name!r} without a base fingerprint",
                hint="open the store with SkillStore(root, base_fingerprint=base.fingerprint)",
            )
        self._check_base(name, fingerprint)
        return fingerprint

    def _check_base(self, name: str, fingerprint: str) -> None:
        if self.base_fingerprint and fingerprint != self.base_fingerprint:
            raise BaseMismatchError(
                f"skill {name!r} was trained on base {fingerprint}, but the loaded base is {self.base_fingerprint}",
                hint="load the base it was trained on (HABITLOOP_BASE), or retrain the skill on this one",
            )

    def _stage_revision(
        self,
        folder: Path,
        source: Path,
        name: str,
        number: int,
        parent: int | None,
        fingerprint: str,
        provenance: Provenance | None,
        evaluation: Evaluation | None,
        routing: RoutingVector | None = None,
    ) -> RevisionRecord:
        label = f"adapter for skill {name!r}"
        config = check_adapter_dir(source, label=label)
        tensors = read_safetensors(source / ADAPTER_WEIGHTS, label=label)
        check_adapter(config, tensors, label=label)  # exactly the LoRA tensors the config implies, nothing of the base
        try:
            lora = LoraSpec.from_adapter_config(config)
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidAdapterError(f"{label}: {ADAPTER_CONFIG} is not a LoRA config: {_one_line(error)}") from error
        folder.mkdir(parents=True, exist_ok=True)
        for file_name in ADAPTER_FILES:
            shutil.copyfile(source / file_name, folder / file_name)
        provenance = provenance or Provenance(source="external")
        if not provenance.library_versions:
            provenance = provenance.model_copy(update={"library_versions": library_versions()})
        record = RevisionRecord(
            skill=name,
            number=number,
            parent=parent,
            base_fingerprint=fingerprint,
            lora=lora,
            provenance=provenance,
            evaluation=evaluation or Evaluation(),
            size_bytes=sum((folder / f).stat().st_size for f in ADAPTER_FILES),
            trainable_params=sum(t.numel() for t in tensors.values()),
            files={f: sha256_file(folder / f) for f in ADAPTER_FILES},
            routing=routing,
        )
        atomic_write_json(folder / REVISION, record.model_dump(mode="json"))
        for file_name in ADAPTER_FILES:
            with (folder / file_name).open("rb+") as handle:
                os.fsync(handle.fileno())
        fsync_dir(folder)
        return record

    def _check_staged_revision(self, folder: Path, name: str, number: int, label: str) -> None:
        record_path = folder / REVISION
        if not record_path.is_file():
            raise InvalidAdapterError(f"{label}: revision {number} of {name!r} is missing")
        record = self._parse(RevisionRecord, record_path, name)
        if record.skill != name or record.number != number:
            raise InvalidAdapterError(f"{label}: {record_path.name} describes {record.skill!r} #{record.number}")
        self._check_base(name, record.base_fingerprint)
        for file_name, expected in record.files.items():
            if file_name not in ADAPTER_FILES or not (folder / file_name).is_file():
                raise InvalidAdapterError(f"{label}: revision {number} lacks {file_name}")
            if sha256_file(folder / file_name) != expected:
                raise InvalidAdapterError(f"{label}: revision {number} {file_name} does not match its checksum")
        config = check_adapter_dir(folder, label=label)
        tensors = read_safetensors(folder / ADAPTER_WEIGHTS, label=f"{label} revision {number}")
        check_adapter(config, tensors, label=f"{label} revision {number}")

    def _move_pointer(self, name: str, number: int, action: Literal["promote", "rollback"], note: str) -> SkillManifest:
        with self._write_lock():
            manifest = self.get(name)
            record = self.revision(name, number)
            self._check_base(name, record.base_fingerprint)
            event = HistoryEvent(action=action, revision=number, note=note)
            updated = manifest.model_copy(
                update={
                    "current": number,
                    "lora": record.lora,
                    "history": (*manifest.history, event),
                    "updated_at": datetime.now(UTC),
                }
            )
            self._write_manifest(updated)
        return updated

    def _write_manifest(self, manifest: SkillManifest) -> None:
        # Validate the copy before it replaces the old one: model_copy skips validation.
        SkillManifest.model_validate(manifest.model_dump())
        atomic_write_json(self.skill_dir(manifest.name) / MANIFEST, manifest.model_dump(mode="json"))

    def _read_manifest(self, name: str, path: Path) -> SkillManifest:
        manifest = self._parse(SkillManifest, path, name)
        if manifest.name != name:
            raise CorruptSkillError(
                f"skill folder {name!r} holds a manifest for {manifest.name!r}",
                hint=f"rename the folder or delete it with `habitloop skills delete {name}`",
            )
        return manifest

    def _read_revision(self, name: str, number: int, manifest: SkillManifest | None = None) -> RevisionRecord:
        """The record of revision `number`, or a `CorruptSkillError` with a fix that works (`_revision_fix`)."""
        path = self.skill_dir(name) / "revs" / str(number) / REVISION
        if not path.is_file():
            raise self._lost(name, number, manifest)
        return self._parse(RevisionRecord, path, name, hint=_revision_fix(name, number, manifest))

    def _lost(self, name: str, number: int, manifest: SkillManifest | None) -> CorruptSkillError:
        return CorruptSkillError(
            f"skill {name!r}: revision {number} is named in its manifest but missing on disk",
            hint=_revision_fix(name, number, manifest),
        )

    def _parse(self, model: type[_M], path: Path, name: str, *, hint: str | None = None) -> _M:
        try:
            return model.model_validate_json(path.read_bytes())
        except (OSError, ValidationError, ValueError) as error:
            raise CorruptSkillError(
                f"skill {name!r}: {path.name} is unreadable: {_one_line(error)}",
                hint=hint
                or f"import it again from an export with --replace, or remove it with `habitloop skills delete {name}`",
            ) from error


def _revision_fix(name: str, number: int, manifest: SkillManifest | None) -> str:
    """A fix for an unreadable revision that works: roll back from a lost current revision, else drop the lost one
    (export leaves lost revisions out, import --replace takes that)."""
    if manifest is not None and number == manifest.current:
        return f"roll back with `habitloop skills rollback {name}` (or --to N), or delete it"
    return (
        f"drop it with `habitloop skills export {name} -o {name}.tar.gz` then "
        f"`habitloop skills import {name}.tar.gz --replace`"
    )


def _one_line(error: Exception) -> str:
    text = str(error).replace("\n", "; ")
    return text if len(text) < 400 else text[:400] + "..."


def _extract_skill_archive(archive: Path, staging: Path, *, label: str, budget: ArchiveBudget) -> str:
    """Extract an export archive member by member, refusing anything but the store's own files. Returns the name."""
    try:
        with open_archive(archive, label=label, budget=budget) as tar:
            return _extract_members(tar, staging, label=label, budget=budget)
    except ARCHIVE_ERRORS as error:
        raise InvalidAdapterError(f"{label}: the archive is damaged or truncated: {error}") from error


def _extract_members(tar: tarfile.TarFile, staging: Path, *, label: str, budget: ArchiveBudget) -> str:
    """Check every member, then extract the manifest, then only the files of the revisions it names.

    Every revision folder is checked against the manifest before a byte of it is written: a revision the manifest
    does not name would be invisible to every later check, so an archive could carry data the store keeps unread.
    Reading the member list first (headers only, within the budget) lets the manifest sit anywhere in the archive.
    """
    name: str | None = None
    manifest: tarfile.TarInfo | None = None
    revisions: builtins.list[tuple[tarfile.TarInfo, tuple[str, ...]]] = []
    for member in tar:
        parts = check_archive_member(member, label=label, budget=budget)
        if not parts:
            continue
        raw = member.name
        try:
            top = validate_skill_name(parts[0])
        except InvalidSkillNameError as error:
            raise UnsafeArchiveError(f"{label}: member {raw!r} is not under a skill folder: {error.message}") from error
        if name is None:
            name = top
        elif top != name:
            raise UnsafeArchiveError(f"{label}: members name two skills ({name!r} and {top!r})")
        if parts[1:] == (MANIFEST,):
            if manifest is not None:
                raise UnsafeArchiveError(f"{label}: member {raw!r} appears twice")
            manifest = member
            continue
        if not (len(parts) == 4 and parts[1] == "revs" and parts[3] in _REVISION_FILES):
            raise UnsafeArchiveError(f"{label}: unexpected member {raw!r}", hint="only habitloop exports import")
        folder = parts[2]
        if not (folder.isascii() and folder.isdigit() and str(int(folder)) == folder):
            raise UnsafeArchiveError(
                f"{label}: unexpected member {raw!r} ({folder!r} is not a revision number)",
                hint="only habitloop exports import",
            )
        revisions.append((member, parts))
    if name is None or manifest is None:
        raise InvalidAdapterError(
            f"{label}: no skill manifest inside", hint="make archives with `habitloop skills export`"
        )
    target = staging / name / MANIFEST
    extract_member(tar, manifest, target, label=label, budget=budget)
    try:
        named = [str(n) for n in SkillManifest.model_validate_json(target.read_bytes()).revision_numbers()]
    except (ValidationError, ValueError) as error:
        raise InvalidAdapterError(f"{label}: {MANIFEST} is unreadable: {_one_line(error)}") from error
    for member, parts in revisions:
        if parts[2] not in named:
            raise UnsafeArchiveError(
                f"{label}: member {member.name!r} is in revs/{parts[2]}, a revision its manifest does not name "
                f"(it names {', '.join(named[:8])}{', ...' if len(named) > 8 else ''})",
                hint="an export holds exactly its manifest's revisions: export the skill again",
            )
    for member, parts in revisions:
        extract_member(tar, member, staging.joinpath(*parts), label=label, budget=budget)
    return name
