"""The skill store: skills as persistent, versioned state on disk.

Layout under `root` (normally `$HABITLOOP_HOME/skills`):

    <name>/manifest.json        identity + `current` pointer + history; replaced atomically (temp file + rename)
    <name>/revs/<n>/            immutable: adapter_config.json, adapter_model.safetensors (PEFT's own format,
                                so vLLM / LoRAX can serve it unchanged) and revision.json (provenance, evaluation,
                                checksums)
    forgotten.jsonl             tombstones of skills deleted by forgetting (name, revisions, when, why)
    .lock                       one writer at a time (readers never need it: every write is a rename)
    .generation                 a counter bumped after every write, so readers that cache (the router) notice
    .tmp/  .trash/              staging and deletion areas; leftovers of a crashed writer are cleaned on next write

A revision is committed in two renames: its folder into `revs/<n>`, then a manifest that names it. A crash between the
two leaves an orphan folder that no manifest names: invisible, and never reused (numbers only grow).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout
from pydantic import ValidationError

from skills.adapter_check import check_adapter
from skills.errors import (
    CorruptSkillError,
    InvalidAdapterError,
    SkillExistsError,
    SkillNotFoundError,
    StoreLockedError,
    UserError,
)
from skills.files import (
    ADAPTER_CONFIG,
    ADAPTER_FILES,
    ADAPTER_WEIGHTS,
    MAX_SKILL_ARCHIVE_BYTES,
    ArchiveBudget,
    atomic_write_bytes,
    atomic_write_json,
    check_adapter_dir,
    fsync_dir,
    library_versions,
    read_safetensors,
    sha256_file,
)
from skills.manifest import (
    Evaluation,
    HistoryEvent,
    LoraSpec,
    Provenance,
    RevisionRecord,
    RoutingVector,
    SkillManifest,
    SkillTombstone,
    skill_kinds,
    validate_skill_name,
)
from skills.reader import (
    FORGOTTEN,
    GENERATION,
    MANIFEST,
    REVISION,
    REVISION_FILES,
    AdapterWeights,
    HistoryEntry,
    SkillCatalog,
    SkillProblem,
    SkillReader,
    StoreReader,
    StoreScan,
    one_line,
)
from skills.store_archive import extract_skill_archive

__all__ = [
    "GENERATION",
    "MANIFEST",
    "REVISION",
    "AdapterWeights",
    "HistoryEntry",
    "SkillCatalog",
    "SkillProblem",
    "SkillReader",
    "SkillStore",
    "StoreScan",
]


class SkillStore(StoreReader):
    """Skills under one folder: create, add revisions, read, roll back, delete, export and import.

    `base_fingerprint` is the fingerprint of the base model loaded in this process; when given, every write and
    every adapter read checks that the skill was made for that base. Listing works without it.
    """

    def __init__(self, root: Path | str, *, base_fingerprint: str | None = None, lock_timeout: float = 60.0) -> None:
        super().__init__(root, base_fingerprint=base_fingerprint)
        self.lock_timeout = lock_timeout
        self.root.mkdir(parents=True, exist_ok=True)
        # One lock object per store: it counts re-entries, so nested writes in one process do not deadlock.
        self._lock = FileLock(str(self.root / ".lock"), timeout=lock_timeout)

    def __repr__(self) -> str:
        return f"SkillStore({str(self.root)!r}, base_fingerprint={self.base_fingerprint!r})"

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
                raise UserError(f"cannot create skill {name!r}: {one_line(error)}") from error
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
        fresh: bool = False,
    ) -> RevisionRecord:
        """Commit a new immutable revision; move `current` to it when `promote`, else keep it as rejected.

        `parent` is the revision it continued training from (default: the current one); `fresh` records none (trained
        from new LoRA weights, as forgetting does when no clean ancestor is left)."""
        with self._write_lock():
            manifest = self.get(name)
            fingerprint = self._fingerprint_for_write(name, manifest.base_fingerprint)
            if parent is not None and parent not in manifest.revision_numbers():
                raise SkillNotFoundError(
                    f"skill {name!r} has no revision {parent} to be the parent",
                    hint=f"its revisions are {manifest.revision_numbers()}",
                )
            revs = self.skill_dir(name) / "revs"
            # never a number used before: neither a folder's (an orphan of a crash) nor a forgotten revision's
            folders = (int(p.name) for p in revs.iterdir() if p.name.isdigit())
            number = 1 + max(max(folders, default=0), manifest.last_number())
            staging = self._staging_dir()
            record = self._stage_revision(
                staging,
                Path(adapter_dir),
                name,
                number,
                None if fresh else manifest.current if parent is None else parent,
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
        """Remove a skill and all its revisions (moved aside first, so a crash never leaves half a skill). Reads nothing
        inside the folder, so a skill whose manifest is garbage or missing is deleted too; the name is validated, so
        nothing outside the store is touched (a link is removed, never followed)."""
        with self._write_lock():
            folder = self.skill_dir(name)
            if not folder.exists() and not folder.is_symlink():
                raise SkillNotFoundError(f"no skill named {name!r} in {self.root}", hint="see `habitloop skills list`")
            self._remove_folder(folder)

    def forget_revisions(
        self, name: str, numbers: Sequence[int], *, note: str = "", description: str | None = None
    ) -> list[int]:
        """Delete revisions on purpose (never the current one): a tombstone each (a `forget` event, `note` saying why)
        and the new `description` if given (the old one may quote them), then their folders. Idempotent."""
        with self._write_lock():
            manifest, wanted = self.get(name), sorted(set(numbers))
            if manifest.current in wanted:
                raise UserError(f"skill {name!r}: revision {manifest.current} is current", hint="move `current` first")
            unknown = sorted(set(wanted) - {*manifest.revision_numbers(), *manifest.forgotten()})
            if unknown:
                raise SkillNotFoundError(f"skill {name!r} has no revisions {unknown}")
            new = [HistoryEvent(action="forget", revision=n, note=note) for n in wanted if not manifest.tombstone(n)]
            if new or description not in (None, manifest.description):
                update: dict[str, Any] = {"history": (*manifest.history, *new), "updated_at": datetime.now(UTC)}
                update["description"] = manifest.description if description is None else description
                self._write_manifest(manifest.model_copy(update=update))
            for number in wanted:
                self._remove_folder(self.skill_dir(name) / "revs" / str(number))
        return wanted

    def forget_skill(self, name: str, *, note: str = "") -> SkillTombstone:
        """Delete a whole skill on purpose, after a tombstone (name, revisions, when, why) in `forgotten.jsonl`."""
        with self._write_lock():
            tombstone = next((t for t in self.forgotten_skills() if t.name == name and t.note == note), None)
            if tombstone is None:
                revisions = tuple(self.get(name).revision_numbers()) if self.exists(name) else ()
                tombstone = SkillTombstone(name=name, revisions=revisions, note=note)
                lines = "".join(t.model_dump_json() + "\n" for t in (*self.forgotten_skills(), tombstone))
                atomic_write_bytes(self.root / FORGOTTEN, lines.encode())
            if self.skill_dir(name).exists():
                self.delete(name)
        return tombstone

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
                for file_name in REVISION_FILES:
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
                name = extract_skill_archive(archive, staging, label=label, budget=budget)
                manifest = self._read_manifest(name, staging / name / MANIFEST)
                self.check_base(name, manifest.base_fingerprint)
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

    def _remove_folder(self, folder: Path) -> None:
        """Move a folder aside (one rename), then remove it: it is never seen half deleted."""
        if folder.exists() or folder.is_symlink():
            trash = self.root / ".trash" / f"{folder.name}-{uuid.uuid4().hex[:8]}"
            trash.parent.mkdir(exist_ok=True)
            folder.rename(trash)
            fsync_dir(folder.parent)
            shutil.rmtree(trash) if trash.is_dir() and not trash.is_symlink() else trash.unlink()

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
        self.check_base(name, fingerprint)
        return fingerprint

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
            raise InvalidAdapterError(f"{label}: {ADAPTER_CONFIG} is not a LoRA config: {one_line(error)}") from error
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
        self.check_base(name, record.base_fingerprint)
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
            self.check_base(name, record.base_fingerprint)
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
