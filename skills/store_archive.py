"""Reading an export archive into a staging folder: every member checked before a byte of it is written.

`SkillStore.import_archive` (skills.store) stages what this extracts, then checks every revision and commits it.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from pydantic import ValidationError

from skills.errors import InvalidAdapterError, InvalidSkillNameError, UnsafeArchiveError
from skills.files import ARCHIVE_ERRORS, ArchiveBudget, check_archive_member, extract_member, open_archive
from skills.manifest import SkillManifest, validate_skill_name
from skills.reader import MANIFEST, REVISION_FILES, one_line


def extract_skill_archive(archive: Path, staging: Path, *, label: str, budget: ArchiveBudget) -> str:
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
    revisions: list[tuple[tarfile.TarInfo, tuple[str, ...]]] = []
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
        if not (len(parts) == 4 and parts[1] == "revs" and parts[3] in REVISION_FILES):
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
        raise InvalidAdapterError(f"{label}: {MANIFEST} is unreadable: {one_line(error)}") from error
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
