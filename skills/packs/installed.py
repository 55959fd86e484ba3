"""Installed packs: their install record (`InstalledPack`), reading them (`show`, `list_packs`), importing their
tools (`load_pack_tools`), and removing them (`remove_pack`).

A pack's tools are importable only if the pack was installed with `trust_code=True` (`--trust-code`); the install
record says which.

Removing a pack deletes the skills it carried, except a skill that
- another installed pack also carries (it stays for that pack),
- was in the store before any pack brought it (it is the user's, not the pack's), or
- has changed since the pack installed it (new revisions, e.g. from consolidation: that is learned work).
Kept skills are reported with the reason.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout
from pydantic import Field, ValidationError

from skills.errors import (
    CorruptSkillError,
    InvalidSkillNameError,
    OperatorError,
    StoreLockedError,
    UserError,
)
from skills.files import fsync_dir
from skills.manifest import validate_skill_name
from skills.packs.manifest import INSTALL_RECORD, PACK_FILE, PackManifest, PackModel, read_manifest, tool_file
from skills.store import SkillStore


class InstalledPack(PackModel):
    """An installed pack: its manifest and what installing it did (`packs_dir/<name>/installed.json`)."""

    manifest: PackManifest
    path: str = Field(description="the installed folder")
    source: str = Field(description="what was installed: a folder or archive path, or builtin:<name>")
    source_sha256: str | None = Field(None, description="sha256 of the archive, when installed from one")
    installed_at: datetime
    trust_code: bool = Field(description="whether its tools may be imported (installed with --trust-code)")
    created_skills: tuple[str, ...] = Field((), description="skills this install imported into the store")
    shared_skills: dict[str, Literal["pack", "store"]] = Field(
        default_factory=dict, description="skills already in the store, identical; who had brought them"
    )
    revisions: dict[str, tuple[int, ...]] = Field(
        default_factory=dict, description="each skill's revisions at install time (to see later changes)"
    )


class InstallRecord(PackModel):
    """The on-disk install record (the manifest itself stays in pack.toml beside it)."""

    source: str
    source_sha256: str | None = None
    installed_at: datetime
    trust_code: bool
    created_skills: tuple[str, ...] = ()
    shared_skills: dict[str, Literal["pack", "store"]] = Field(default_factory=dict)
    revisions: dict[str, tuple[int, ...]] = Field(default_factory=dict)


class RemoveReport(PackModel):
    """What `remove_pack` did."""

    name: str
    removed_skills: tuple[str, ...]
    kept_skills: dict[str, str] = Field(description="skill -> why it was kept")


@contextmanager
def packs_lock(packs_dir: Path) -> Iterator[None]:
    packs_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(packs_dir / ".lock"), timeout=60)
    try:
        lock.acquire()
    except Timeout as error:
        raise StoreLockedError(
            f"the packs folder {packs_dir} is locked by another process",
            hint=f"wait for it, or remove {packs_dir / '.lock'} if no habitloop process is running",
        ) from error
    try:
        yield
    finally:
        lock.release()


def _pack_dir(packs_dir: Path, name: str) -> Path:
    try:
        return Path(packs_dir) / validate_skill_name(name)
    except InvalidSkillNameError as error:
        raise UserError(f"invalid pack name {name!r}", hint=error.hint) from error


def show(name: str, packs_dir: Path | str) -> InstalledPack:
    """The installed pack `name`; `UserError` if it is not installed, `OperatorError` if its files are damaged."""
    folder = _pack_dir(Path(packs_dir), name)
    if not (folder / INSTALL_RECORD).is_file():
        raise UserError(f"no pack named {name!r} is installed", hint="see `habitloop packs list`")
    try:
        manifest = read_manifest(folder / PACK_FILE)
        record = InstallRecord.model_validate_json((folder / INSTALL_RECORD).read_bytes())
    except (UserError, ValidationError, OSError) as error:
        raise CorruptSkillError(
            f"installed pack {name!r} is damaged: {error}",
            hint=f"remove it (`habitloop packs remove {name}`) and install it again",
        ) from error
    return InstalledPack(manifest=manifest, path=str(folder), **record.model_dump())


def list_packs(packs_dir: Path | str) -> list[InstalledPack]:
    """Every installed pack, by name (damaged ones are skipped; `show` names the problem)."""
    packs_dir = Path(packs_dir)
    if not packs_dir.is_dir():
        return []
    packs = []
    for entry in sorted(packs_dir.iterdir()):
        if entry.name.startswith(".") or not (entry / INSTALL_RECORD).is_file():
            continue
        try:
            packs.append(show(entry.name, packs_dir))
        except (UserError, OperatorError):
            continue
    return packs


def installed_by_skill(packs_dir: Path) -> dict[str, list[str]]:
    """skill -> the installed packs that carry it."""
    carriers: dict[str, list[str]] = {}
    for pack in list_packs(packs_dir):
        for skill in pack.manifest.skill_names():
            carriers.setdefault(skill, []).append(pack.manifest.name)
    return carriers


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the module's `.py` every time: never reads a `__pycache__` beside it (whose bytecode would run
    instead of the source a reviewer read, if its header matched) and never writes one into the installed pack."""

    def get_code(self, fullname: str) -> Any:
        return self.source_to_code(self.get_data(self.path), self.path)


def load_pack_tools(name: str, packs_dir: Path | str) -> list[Any]:
    """Import the tools of an installed pack: only if it was installed with `trust_code=True` (`--trust-code`).

    Returns the objects the specs name (lists flattened): `Tool`s, typed functions or LangChain tools, as `--tools
    pack:NAME` accepts them. Each module is loaded from its file in the installed pack under a private module name,
    so two packs' `tools.py` never collide and nothing on `sys.path` can stand in for it, and always compiled from
    that `.py` (`_SourceOnlyLoader`): no bytecode beside it can run instead.
    """
    pack = show(name, packs_dir)
    if not pack.manifest.tools:
        return []
    if not pack.trust_code:
        raise UserError(
            f"pack {name!r} was installed without --trust-code, so its tools ({', '.join(pack.manifest.tools)}) "
            "may not be imported",
            hint=f"read its code in {pack.path}, then reinstall it with `habitloop packs install ... --trust-code`",
        )
    items: list[Any] = []
    for spec in pack.manifest.tools:
        module_name, _, attr = spec.partition(":")
        file = Path(pack.path) / tool_file(spec)
        private = f"habitloop_pack__{name.replace('-', '_')}__{module_name.replace('.', '__')}"
        module = sys.modules.get(private)
        if module is None:
            spec_ = importlib.util.spec_from_file_location(private, file, loader=_SourceOnlyLoader(private, str(file)))
            if spec_ is None or spec_.loader is None:
                raise CorruptSkillError(f"pack {name!r}: cannot load {file}")
            module = importlib.util.module_from_spec(spec_)
            sys.modules[private] = module
            try:
                spec_.loader.exec_module(module)
            except BaseException:
                del sys.modules[private]
                raise
        if not hasattr(module, attr):
            raise UserError(f"pack {name!r}: {tool_file(spec)} has no attribute {attr!r}")
        value = getattr(module, attr)
        items.extend(value if isinstance(value, list | tuple) else [value])
    return items


# ------------------------------------------------------------------------------------------------ removing


def remove_pack(name: str, store: SkillStore, packs_dir: Path | str, *, keep_skills: bool = False) -> RemoveReport:
    """Uninstall pack `name` and delete the skills it brought (see the module doc for which ones stay)."""
    packs_dir = Path(packs_dir)
    with packs_lock(packs_dir):
        pack = show(name, packs_dir)
        others = {k: [p for p in v if p != name] for k, v in installed_by_skill(packs_dir).items()}
        removed: list[str] = []
        kept: dict[str, str] = {}
        for skill in pack.manifest.skill_names():
            if not store.exists(skill):
                kept[skill] = "already gone from the store"
            elif keep_skills:
                kept[skill] = "keep_skills was asked for"
            elif others.get(skill):
                kept[skill] = f"pack {others[skill][0]!r} also carries it"
            elif pack.shared_skills.get(skill) == "store":
                kept[skill] = "it was in the store before the pack was installed"
            elif tuple(store.get(skill).revision_numbers()) != pack.revisions.get(skill):
                kept[skill] = "it has new revisions since the pack installed it (learned work is never deleted)"
            else:
                store.delete(skill)
                removed.append(skill)
        folder = _pack_dir(packs_dir, name)
        trash = packs_dir / ".trash" / f"{name}-{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(exist_ok=True)
        folder.rename(trash)
        fsync_dir(packs_dir)
        shutil.rmtree(trash, ignore_errors=True)
    return RemoveReport(name=name, removed_skills=tuple(removed), kept_skills=kept)
