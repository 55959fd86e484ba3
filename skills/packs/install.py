"""Installing a pack (`install_pack`): from a folder, a `.tar.gz` of one, or a built-in pack's name.

Installing never executes anything from the pack. It stages the pack in a temporary folder (every archive member
through the store's own checks: no links, absolute or `..` paths, device files, pickle weights or Python bytecode;
everything it unpacks, skill archives included, within one size budget), checks the manifest, the base fingerprint
and every skill archive (by importing it into a scratch store first), imports the skills, writes an install record,
then renames the staged folder into `packs_dir/<name>`. Any failure removes the staging folder and every skill this
install had imported: nothing is left half-installed.

The built-in packs are package data, one folder each under `skills/packs/builtin/`.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from skills.errors import (
    BaseMismatchError,
    SkillExistsError,
    SkillNotFoundError,
    UnsafeArchiveError,
    UserError,
)
from skills.files import (
    ARCHIVE_ERRORS,
    PICKLE_SUFFIXES,
    ArchiveBudget,
    atomic_write_json,
    check_archive_member,
    copy_counted,
    extract_member,
    fsync_dir,
    is_bytecode,
    open_archive,
    sha256_file,
)
from skills.packs.installed import InstalledPack, InstallRecord, installed_by_skill, packs_lock, show
from skills.packs.manifest import INSTALL_RECORD, PACK_FILE, PackManifest, read_manifest, tool_file
from skills.store import SkillStore

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
# What installing one pack may unpack, its files and the skill archives in them (unpacked by the store) together:
# a pack of LoRA adapters is a few MB; this stops a tar bomb, however deeply it is nested.
MAX_PACK_BYTES = 512 << 20
MAX_PACK_FILES = 10_000


def builtin_packs() -> dict[str, Path]:
    """The packs that ship with habitloop (`skills/packs/builtin/<name>/`), by name."""
    return {p.name: p for p in sorted(BUILTIN_DIR.iterdir()) if (p / PACK_FILE).is_file()}


def _resolve_source(source: Path | str) -> tuple[Path, str]:
    path = Path(source).expanduser()
    if path.exists():
        return path, str(path.resolve())
    builtin = builtin_packs().get(str(source))
    if builtin is not None:
        return builtin, f"builtin:{source}"
    raise UserError(
        f"no pack at {str(source)!r}",
        hint="give a pack folder, a .tar.gz of one, or a built-in pack name ("
        + (", ".join(builtin_packs()) or "none installed")
        + ")",
    )


def _stage_archive(archive: Path, target: Path, label: str, budget: ArchiveBudget) -> None:
    """Extract a pack archive into `target` through the store's member checks, within `budget`."""
    try:
        with open_archive(archive, label=label, budget=budget) as tar:
            for member in tar:
                parts = check_archive_member(member, label=label, budget=budget)
                if parts:
                    extract_member(tar, member, target.joinpath(*parts), label=label, budget=budget)
    except ARCHIVE_ERRORS as error:
        raise UnsafeArchiveError(f"{label}: the archive is damaged or truncated: {error}") from error


def _stage_folder(folder: Path, target: Path, label: str, budget: ArchiveBudget) -> None:
    """Copy a pack folder into `target`, refusing the same things an archive may not hold, within `budget`.

    Python bytecode (`__pycache__/`, `.pyc`, `.pyo`) is left behind rather than refused: a developer's folder has
    it as soon as its tools were imported once. The installed copy never holds any (and tools load from source).
    """
    for directory, subdirs, files in os.walk(folder, followlinks=False):
        here = Path(directory)
        for name in [*subdirs, *files]:
            entry = here / name
            relative = entry.relative_to(folder)
            mode = entry.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise UnsafeArchiveError(f"{label}: {relative} is a link, which could point outside the pack")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise UnsafeArchiveError(f"{label}: {relative} is not a regular file")
            if name.lower().endswith(PICKLE_SUFFIXES):
                raise UnsafeArchiveError(f"{label}: {relative} is a pickle file, which could run code when loaded")
            if is_bytecode(relative.parts):
                continue
            size = entry.stat().st_size
            budget.admit(str(relative), size, label=label)
            with entry.open("rb") as handle:
                copy_counted(handle, target / relative, declared=size, name=str(relative), label=label, budget=budget)


def _pack_root(staged: Path, label: str) -> Path:
    """The staged folder holding pack.toml: the top itself, or its one sub-folder (a tar of a folder)."""
    if (staged / PACK_FILE).is_file():
        return staged
    children = list(staged.iterdir())
    if len(children) == 1 and (children[0] / PACK_FILE).is_file():
        return children[0]
    raise UserError(
        f"{label}: no {PACK_FILE} at its top", hint="a pack is a folder (or a .tar.gz of one) with pack.toml"
    )


def _current_files(store: SkillStore, name: str) -> dict[str, str]:
    return store.revision(name).files


def install_pack(
    path: Path | str, store: SkillStore, packs_dir: Path | str, *, trust_code: bool = False
) -> InstalledPack:
    """Install the pack at `path` (a folder, a `.tar.gz` of one, or a built-in pack's name). See the module doc.

    `store` must know the loaded base's fingerprint: a pack for another base is refused with both fingerprints.
    """
    packs_dir = Path(packs_dir)
    source_path, source = _resolve_source(path)
    label = f"pack {source_path.name}"
    if not store.base_fingerprint:
        raise UserError(
            "installing a pack needs the loaded base's fingerprint",
            hint="open the store with SkillStore(root, base_fingerprint=base.fingerprint)",
        )
    created: list[str] = []
    with packs_lock(packs_dir):
        staging = packs_dir / ".tmp" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            # One budget for everything this install unpacks: the pack's files and the skill archives inside them.
            budget = ArchiveBudget(label, max_bytes=MAX_PACK_BYTES, max_members=MAX_PACK_FILES)
            root, source_sha = _stage(source_path, staging / "pack", label, budget)
            manifest = read_manifest(root / PACK_FILE)
            _check_pack(root, manifest, store, packs_dir)
            scratch = SkillStore(staging / "scratch", base_fingerprint=store.base_fingerprint)
            plan = _plan_skills(root, manifest, store, scratch, packs_dir, budget)
            for skill in manifest.skills:
                if plan[skill.name] == "create":
                    store.import_archive(root / skill.archive)
                    created.append(skill.name)
            record = InstallRecord(
                source=source,
                source_sha256=source_sha,
                installed_at=datetime.now(UTC),
                trust_code=trust_code,
                created_skills=tuple(created),
                shared_skills={k: v for k, v in plan.items() if v != "create"},
                revisions={s: tuple(store.get(s).revision_numbers()) for s in manifest.skill_names()},
            )
            atomic_write_json(root / INSTALL_RECORD, record.model_dump(mode="json"))
            shutil.rmtree(staging / "scratch", ignore_errors=True)
            root.rename(packs_dir / manifest.name)
            fsync_dir(packs_dir)
        except BaseException:
            _delete_skills(store, created)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return show(manifest.name, packs_dir)


def _stage(source: Path, target: Path, label: str, budget: ArchiveBudget) -> tuple[Path, str | None]:
    """Stage the pack at `source` (a folder or an archive) into `target`: its root there, and the archive's sha256."""
    source_sha = None
    if source.is_dir():
        _stage_folder(source, target, label, budget)
    else:
        source_sha = sha256_file(source)
        _stage_archive(source, target, label, budget)
    target.mkdir(exist_ok=True)
    return _pack_root(target, label), source_sha


def _check_pack(root: Path, manifest: PackManifest, store: SkillStore, packs_dir: Path) -> None:
    """Refuse a staged pack that claims its own install record, is for another base, is installed already, or
    lists a tool whose file it does not carry."""
    label = f"pack {manifest.name!r}"
    if (root / INSTALL_RECORD).exists():
        raise UnsafeArchiveError(f"{label} ships its own {INSTALL_RECORD}, which only an install may write")
    if manifest.base_fingerprint != store.base_fingerprint:
        raise BaseMismatchError(
            f"{label} was made for base {manifest.base_fingerprint}, but the loaded base is {store.base_fingerprint}",
            hint="load the base it was made for (HABITLOOP_BASE), or ask for a pack built on this one",
        )
    if (packs_dir / manifest.name).exists():
        raise UserError(
            f"a pack named {manifest.name!r} is already installed",
            hint=f"remove it first with `habitloop packs remove {manifest.name}`",
        )
    for spec in manifest.tools:
        if not (root / tool_file(spec)).is_file():
            raise UserError(f"{label}: tool {spec!r} needs {tool_file(spec)}, which is not in the pack")


def _plan_skills(
    root: Path, manifest: PackManifest, store: SkillStore, scratch: SkillStore, packs_dir: Path, budget: ArchiveBudget
) -> dict[str, Literal["create", "pack", "store"]]:
    """Check every skill archive (by importing it into `scratch`) and decide, per skill, whether the install creates
    it or it is already in the store, identical, brought by another pack (`pack`) or by the user (`store`)."""
    label = f"pack {manifest.name!r}"
    installed = installed_by_skill(packs_dir)
    plan: dict[str, Literal["create", "pack", "store"]] = {}
    for skill in manifest.skills:
        archive = root / skill.archive
        if not archive.is_file():
            raise UserError(f"{label}: skill archive {skill.archive} is not in the pack")
        if sha256_file(archive) != skill.sha256:
            raise UnsafeArchiveError(f"{label}: {skill.archive} does not match its sha256 in {PACK_FILE}")
        # The store's own import checks every member and file; a scratch store keeps the real one untouched.
        # It unpacks within the pack's budget; the import into the real store repeats these bytes.
        carried = scratch.import_archive(archive, budget=budget)
        if carried.name != skill.name:
            raise UserError(f"{label}: {skill.archive} holds skill {carried.name!r}, not {skill.name!r}")
        if not store.exists(skill.name):
            plan[skill.name] = "create"
        elif _current_files(store, skill.name) != _current_files(scratch, skill.name):
            owner = installed.get(skill.name)
            raise SkillExistsError(
                f"{label}: a different skill named {skill.name!r} is already in the store"
                + (f" (from pack {owner[0]!r})" if owner else ""),
                hint=f"remove that pack, or delete the skill (`habitloop skills delete {skill.name}`)",
            )
        else:
            plan[skill.name] = "pack" if skill.name in installed else "store"
    return plan


def _delete_skills(store: SkillStore, created: list[str]) -> None:
    """Undo a failed install: delete the skills it had imported, newest first, as far as possible."""
    for name in reversed(created):
        try:
            store.delete(name)
        except (SkillNotFoundError, OSError):  # pragma: no cover - best effort while failing
            pass
