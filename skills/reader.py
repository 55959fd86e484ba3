"""Reading a skill store: the records on disk, and the protocol every read view of skills satisfies.

`SkillStore` (skills.store) is a `StoreReader` that also writes; `LayeredStore` and `PersonalView`
(skills.instances) route names to stores. Residency and the composer need only `SkillReader`; the router also
rescans (`SkillCatalog`). The layout on disk is described in skills.store.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from skills.adapter_check import check_adapter
from skills.errors import (
    BaseMismatchError,
    CorruptSkillError,
    InvalidAdapterError,
    InvalidSkillNameError,
    SkillNotFoundError,
    UnsafeArchiveError,
    UserError,
)
from skills.files import ADAPTER_CONFIG, ADAPTER_FILES, ADAPTER_WEIGHTS, check_adapter_dir, read_safetensors
from skills.manifest import (
    HistoryEvent,
    RevisionRecord,
    RevisionStatus,
    SkillManifest,
    SkillTombstone,
    validate_skill_name,
)

MANIFEST = "manifest.json"
REVISION = "revision.json"
GENERATION = ".generation"
FORGOTTEN = "forgotten.jsonl"
REVISION_FILES = (REVISION, *ADAPTER_FILES)
_M = TypeVar("_M", bound=BaseModel)


class HistoryEntry(BaseModel):
    """One committed revision as `history` shows it. A revision the manifest names but whose record cannot be read
    (its folder lost, say) is still listed, with `revision` None and `problem` saying what is wrong and the fix:
    one lost revision never hides the others. A forgotten revision (deleted on purpose) is listed with `revision`
    None, status "forgotten" and its `tombstone` (when and why), and no problem: it is gone, not lost."""

    number: int
    revision: RevisionRecord | None
    status: RevisionStatus
    current: bool
    problem: str | None = None
    tombstone: HistoryEvent | None = None


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


@runtime_checkable
class SkillReader(Protocol):
    """What reads skills by name: a `SkillStore`, or a view routing names to stores (`LayeredStore`,
    `PersonalView`). Residency and the composer take one of these, so a view passes where a store would."""

    @property
    def root(self) -> Path: ...

    @property
    def base_fingerprint(self) -> str | None: ...

    def exists(self, name: str) -> bool: ...

    def get(self, name: str) -> SkillManifest: ...

    def list(self) -> builtins.list[SkillManifest]: ...

    def revision(self, name: str, number: int | None = None) -> RevisionRecord: ...

    def revision_dir(self, name: str, number: int | None = None) -> Path: ...

    def history(self, name: str) -> builtins.list[HistoryEntry]: ...

    def read_adapter(self, name: str, number: int | None = None) -> AdapterWeights: ...


@runtime_checkable
class SkillCatalog(SkillReader, Protocol):
    """A reader that can also list its folder's problems and say cheaply whether anything changed: what the
    router keeps its index in step with."""

    def scan(self) -> StoreScan: ...

    def generation(self) -> int: ...


class StoreReader:
    """The reading half of a store under `root`: manifests, revision records, verified adapters. Never writes.

    `base_fingerprint` is the fingerprint of the base model loaded in this process; when given, every adapter read
    checks that the skill was made for that base. Listing works without it.
    """

    def __init__(self, root: Path | str, *, base_fingerprint: str | None = None) -> None:
        self.root = Path(root).expanduser()
        self.base_fingerprint = base_fingerprint

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
        `problem` instead of failing the whole history, a forgotten one with its tombstone."""
        manifest = self.get(name)
        entries = []
        for number in sorted({*manifest.revision_numbers(), *manifest.forgotten()}):
            tombstone = manifest.tombstone(number)
            if tombstone is not None:
                entries.append(
                    HistoryEntry(number=number, revision=None, status="forgotten", current=False, tombstone=tombstone)
                )
                continue
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
        self.check_base(name, record.base_fingerprint)
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

    def forgotten_skills(self) -> builtins.list[SkillTombstone]:
        """Skills deleted whole by forgetting (`SkillStore.forget_skill`), oldest first: their tombstones."""
        path = self.root / FORGOTTEN
        if not path.is_file():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [SkillTombstone.model_validate_json(line) for line in lines if line.strip()]

    def check_base(self, name: str, fingerprint: str) -> None:
        """Refuse a skill made for another base than the one loaded (when one is)."""
        if self.base_fingerprint and fingerprint != self.base_fingerprint:
            raise BaseMismatchError(
                f"skill {name!r} was trained on base {fingerprint}, but the loaded base is {self.base_fingerprint}",
                hint="load the base it was trained on (HABITLOOP_BASE), or retrain the skill on this one",
            )

    # ------------------------------------------------------------------------------------------------ internals

    def _read_manifest(self, name: str, path: Path) -> SkillManifest:
        manifest = self._parse(SkillManifest, path, name)
        if manifest.name != name:
            raise CorruptSkillError(
                f"skill folder {name!r} holds a manifest for {manifest.name!r}",
                hint=f"rename the folder or delete it with `habitloop skills delete {name}`",
            )
        return manifest

    def _read_revision(self, name: str, number: int, manifest: SkillManifest | None = None) -> RevisionRecord:
        """The record of revision `number`, or a `CorruptSkillError` with a fix that works (`revision_fix`)."""
        path = self.skill_dir(name) / "revs" / str(number) / REVISION
        if not path.is_file():
            raise self._lost(name, number, manifest)
        return self._parse(RevisionRecord, path, name, hint=revision_fix(name, number, manifest))

    def _lost(self, name: str, number: int, manifest: SkillManifest | None) -> CorruptSkillError:
        return CorruptSkillError(
            f"skill {name!r}: revision {number} is named in its manifest but missing on disk",
            hint=revision_fix(name, number, manifest),
        )

    def _parse(self, model: type[_M], path: Path, name: str, *, hint: str | None = None) -> _M:
        try:
            return model.model_validate_json(path.read_bytes())
        except (OSError, ValidationError, ValueError) as error:
            raise CorruptSkillError(
                f"skill {name!r}: {path.name} is unreadable: {one_line(error)}",
                hint=hint
                or f"import it again from an export with --replace, or remove it with `habitloop skills delete {name}`",
            ) from error


def revision_fix(name: str, number: int, manifest: SkillManifest | None) -> str:
    """A fix for an unreadable revision that works: roll back from a lost current revision, else drop the lost one
    (export leaves lost revisions out, import --replace takes that)."""
    if manifest is not None and number == manifest.current:
        return f"roll back with `habitloop skills rollback {name}` (or --to N), or delete it"
    return (
        f"drop it with `habitloop skills export {name} -o {name}.tar.gz` then "
        f"`habitloop skills import {name}.tar.gz --replace`"
    )


def one_line(error: Exception) -> str:
    """The error's text on one line, cut at 400 characters: for messages that quote a parser's complaint."""
    text = str(error).replace("\n", "; ")
    return text if len(text) < 400 else text[:400] + "..."
