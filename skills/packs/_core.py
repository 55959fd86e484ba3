"""Skill packs: skills (and optionally tools and example tasks) shipped together, installed in one step.

A pack is a folder, or a `.tar.gz` of one, holding `pack.toml`:

    schema_version = 1
    name = "calculator-habit"
    version = "1.0.0"
    description = "Always use the calculator for arithmetic. Measured: ..."
    license = "Apache-2.0"
    base_fingerprint = "..."                 # the base every skill in it was trained on
    tools = ["calc_tools:TOOLS"]             # optional, `module:attr`; the module is `calc_tools.py` in the pack

    [[skills]]                               # each one a `SkillStore.export` archive inside the pack
    name = "calculator-habit"
    archive = "skills/calculator-habit.tar.gz"
    sha256 = "..."

    [[tasks]]                                # optional examples, with declarative checkers (no code runs)
    prompt = "What is 17 * 23?"
    checker = { kind = "contains", value = "391" }

Installing (`install_pack`) never executes anything from the pack. It stages the pack in a temporary folder (every
archive member through the store's own checks: no links, absolute or `..` paths, device files, pickle weights or
Python bytecode; everything it unpacks, skill archives included, within one size budget),
checks the manifest, the base fingerprint and every skill archive (by importing it into a scratch store first),
imports the skills, writes an install record, then renames the staged folder into `packs_dir/<name>`. Any failure
removes the staging folder and every skill this install had imported: nothing is left half-installed.

A pack's tools are importable (`load_pack_tools`) only if the pack was installed with `trust_code=True`
(`--trust-code`); the install record says which.

Removing a pack (`remove_pack`) deletes the skills it carried, except a skill that
- another installed pack also carries (it stays for that pack),
- was in the store before any pack brought it (it is the user's, not the pack's), or
- has changed since the pack installed it (new revisions, e.g. from consolidation: that is learned work).
Kept skills are reported with the reason.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import stat
import sys
import tarfile
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skills.errors import (
    BaseMismatchError,
    CorruptSkillError,
    InvalidSkillNameError,
    OperatorError,
    SkillExistsError,
    SkillNotFoundError,
    StoreLockedError,
    UnsafeArchiveError,
    UserError,
)
from skills.files import (
    ARCHIVE_ERRORS,
    PICKLE_SUFFIXES,
    ArchiveBudget,
    atomic_write_bytes,
    atomic_write_json,
    check_archive_member,
    copy_counted,
    extract_member,
    fsync_dir,
    is_bytecode,
    open_archive,
    sha256_file,
)
from skills.manifest import validate_skill_name
from skills.store import SkillStore

PACK_FILE = "pack.toml"
INSTALL_RECORD = "installed.json"  # written by install_pack; a pack that ships one is refused (it could claim trust)
SCHEMA_VERSION = 1
BUILTIN_DIR = Path(__file__).resolve().parent
# What installing one pack may unpack, its files and the skill archives in them (unpacked by the store) together:
# a pack of LoRA adapters is a few MB; this stops a tar bomb, however deeply it is nested.
_MAX_PACK_BYTES = 512 << 20
_MAX_PACK_FILES = 10_000
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,3}([-+.][0-9A-Za-z.+-]{1,64})?$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ATTR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ------------------------------------------------------------------------------------------------ the manifest


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_path(value: str) -> str:
    """A path inside the pack: relative, POSIX, no `..`, no backslash, no hidden or reserved name."""
    path = PurePosixPath(value)
    if (
        not value
        or "\\" in value
        or path.is_absolute()
        or any(part in ("..", ".") or part.startswith(".") for part in path.parts)
        or str(path) != value
    ):
        raise ValueError(f"{value!r} must be a plain relative path inside the pack (no '..', '/', '\\' or '.')")
    if value == INSTALL_RECORD:
        raise ValueError(f"{value!r} is reserved for the install record")
    return value


class PackSkill(_Model):
    """One skill the pack carries, as a store export archive inside the pack."""

    name: str = Field(description="the skill's name in the store (a slug)")
    archive: str = Field(description="path of its `habitloop skills export` archive, relative to the pack")
    sha256: str = Field(description="sha256 of the archive's bytes, checked before it is read")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_skill_name(value)

    @field_validator("archive")
    @classmethod
    def _archive(cls, value: str) -> str:
        return _relative_path(value)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("must be a sha256 hex digest (64 lowercase hex characters)")
        return value


class TaskChecker(_Model):
    """A declarative check of an answer, so example tasks can be judged without running the pack's code."""

    kind: Literal["contains", "regex", "tool_call"] = Field(
        description="contains: the answer contains `value`; regex: `value` matches the answer; "
        "tool_call: the run called the tool named `value`"
    )
    value: str = Field(min_length=1, max_length=1000)

    @field_validator("value")
    @classmethod
    def _regex(cls, value: str, info: Any) -> str:
        if info.data.get("kind") == "regex":
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from error
        return value

    def check(self, answer: str | None, tool_calls: Sequence[str] = ()) -> bool:
        """Whether `answer` (and the names of the tools the run called) pass."""
        if self.kind == "contains":
            return self.value in (answer or "")
        if self.kind == "regex":
            return re.search(self.value, answer or "") is not None
        return self.value in tool_calls

    def as_checker(self) -> Any:
        """A checker for `Agent.run(checker=...)`: (task, answer, trajectory) -> bool."""

        def check(task: str, answer: str | None, trajectory: Any) -> bool:
            steps = getattr(trajectory, "steps", ())
            calls = [s.tool for s in steps if getattr(s, "kind", None) == "tool_call"]
            return self.check(answer, calls)

        return check


class PackTask(_Model):
    """An example task that shows what the pack is for, optionally with a checker."""

    prompt: str = Field(min_length=1, max_length=4000)
    checker: TaskChecker | None = None
    skills: tuple[str, ...] = Field((), description="skills to run it with (default: all of the pack's)")

    @field_validator("skills")
    @classmethod
    def _skills(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(validate_skill_name(v) for v in value)


class PackManifest(_Model):
    """`pack.toml`: what a pack is and what it carries."""

    schema_version: int = SCHEMA_VERSION
    name: str = Field(description="the pack's name (a slug); installed under packs_dir/<name>")
    version: str = Field(description="e.g. 1.0.0")
    description: str = Field("", max_length=4000, description="what it does, and its measured effect")
    license: str = Field(min_length=1, max_length=200, description="an SPDX identifier, e.g. Apache-2.0")
    base_fingerprint: str = Field(min_length=1, max_length=200, description="the base its skills were trained on")
    skills: tuple[PackSkill, ...] = ()
    tools: tuple[str, ...] = Field((), description="tools as module:attr; the module is a .py file in the pack")
    tasks: tuple[PackTask, ...] = ()

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, value: int) -> int:
        if not 1 <= value <= SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported by this habitloop ({SCHEMA_VERSION})")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_skill_name(value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _VERSION_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a version like 1.0.0")
        return value

    @field_validator("skills")
    @classmethod
    def _unique_skills(cls, value: tuple[PackSkill, ...]) -> tuple[PackSkill, ...]:
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError("a skill is listed twice")
        return value

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for spec in value:
            tool_file(spec)
        return value

    def skill_names(self) -> list[str]:
        return [s.name for s in self.skills]


def tool_file(spec: str) -> str:
    """The pack-relative file of a `module:attr` tool spec (`a.b:X` -> `a/b.py`); ValueError if malformed."""
    module, _, attr = spec.partition(":")
    if not _MODULE_RE.fullmatch(module) or not _ATTR_RE.fullmatch(attr):
        raise ValueError(f"tool {spec!r} is not 'module:attr' (a Python module name and an attribute)")
    return _relative_path(module.replace(".", "/") + ".py")


def read_manifest(path: Path | str) -> PackManifest:
    """Parse a `pack.toml` (a file, or a folder holding one); `UserError` naming the field if it is invalid."""
    path = Path(path)
    if path.is_dir():
        path = path / PACK_FILE
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as error:
        raise UserError(f"no {PACK_FILE} in {path.parent}", hint="a pack is a folder with a pack.toml") from error
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is unreadable: {error}") from error
    return parse_manifest(text, label=str(path))


def parse_manifest(text: str, *, label: str = PACK_FILE) -> PackManifest:
    """Parse the text of a `pack.toml`. Any problem is a `UserError` (never another exception)."""
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise UserError(f"{label} is not valid TOML: {error}", hint="see `habitloop packs create` for one") from error
    try:
        return PackManifest.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in error.errors()[:5]
        )
        raise UserError(f"{label} is not a valid pack manifest: {problems}") from error


def _toml_str(value: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dump_manifest(manifest: PackManifest) -> str:
    """`pack.toml` text for a manifest (written by hand: three value types suffice; a test round-trips it)."""
    data = manifest.model_dump(mode="json")
    lines = [f"{key} = {_toml_value(data[key])}" for key in ("schema_version", "name", "version", "description")]
    lines += [f"{key} = {_toml_value(data[key])}" for key in ("license", "base_fingerprint", "tools")]
    for table in ("skills", "tasks"):
        for row in data[table]:
            lines += ["", f"[[{table}]]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in row.items() if value is not None]
    return "\n".join(lines) + "\n"


def write_manifest(folder: Path, manifest: PackManifest) -> Path:
    """Write `folder/pack.toml` atomically."""
    path = Path(folder) / PACK_FILE
    atomic_write_bytes(path, dump_manifest(manifest).encode("utf-8"))
    return path


# ------------------------------------------------------------------------------------------------ install records


class InstalledPack(_Model):
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


class _Record(_Model):
    """The on-disk install record (the manifest itself stays in pack.toml beside it)."""

    source: str
    source_sha256: str | None = None
    installed_at: datetime
    trust_code: bool
    created_skills: tuple[str, ...] = ()
    shared_skills: dict[str, Literal["pack", "store"]] = Field(default_factory=dict)
    revisions: dict[str, tuple[int, ...]] = Field(default_factory=dict)


class RemoveReport(_Model):
    """What `remove_pack` did."""

    name: str
    removed_skills: tuple[str, ...]
    kept_skills: dict[str, str] = Field(description="skill -> why it was kept")


# ------------------------------------------------------------------------------------------------ installing


@contextmanager
def _locked(packs_dir: Path) -> Iterator[None]:
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


def builtin_packs() -> dict[str, Path]:
    """The packs that ship with habitloop (`skills/packs/<name>/`), by name."""
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
    with _locked(packs_dir):
        staging = packs_dir / ".tmp" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            source_sha = None
            # One budget for everything this install unpacks: the pack's files and the skill archives inside them.
            budget = ArchiveBudget(label, max_bytes=_MAX_PACK_BYTES, max_members=_MAX_PACK_FILES)
            if source_path.is_dir():
                _stage_folder(source_path, staging / "pack", label, budget)
            else:
                source_sha = sha256_file(source_path)
                _stage_archive(source_path, staging / "pack", label, budget)
            (staging / "pack").mkdir(exist_ok=True)
            root = _pack_root(staging / "pack", label)
            manifest = read_manifest(root / PACK_FILE)
            label = f"pack {manifest.name!r}"
            if (root / INSTALL_RECORD).exists():
                raise UnsafeArchiveError(f"{label} ships its own {INSTALL_RECORD}, which only an install may write")
            if manifest.base_fingerprint != store.base_fingerprint:
                raise BaseMismatchError(
                    f"{label} was made for base {manifest.base_fingerprint}, but the loaded base is "
                    f"{store.base_fingerprint}",
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
            installed = _installed_by_skill(packs_dir)
            scratch = SkillStore(staging / "scratch", base_fingerprint=store.base_fingerprint)
            plan: dict[str, Literal["create", "pack", "store"]] = {}
            for skill in manifest.skills:
                archive = root / skill.archive
                if not archive.is_file():
                    raise UserError(f"{label}: skill archive {skill.archive} is not in the pack")
                if sha256_file(archive) != skill.sha256:
                    raise UnsafeArchiveError(f"{label}: {skill.archive} does not match its sha256 in {PACK_FILE}")
                # The store's own import checks every member and file; a scratch store keeps the real one untouched.
                # It unpacks within the pack's budget; the import into the real store below repeats these bytes.
                carried = scratch.import_archive(archive, budget=budget)
                if carried.name != skill.name:
                    raise UserError(f"{label}: {skill.archive} holds skill {carried.name!r}, not {skill.name!r}")
                if store.exists(skill.name):
                    if _current_files(store, skill.name) != _current_files(scratch, skill.name):
                        owner = installed.get(skill.name)
                        raise SkillExistsError(
                            f"{label}: a different skill named {skill.name!r} is already in the store"
                            + (f" (from pack {owner[0]!r})" if owner else ""),
                            hint=f"remove that pack, or delete the skill (`habitloop skills delete {skill.name}`)",
                        )
                    plan[skill.name] = "pack" if skill.name in installed else "store"
                else:
                    plan[skill.name] = "create"
            for skill in manifest.skills:
                if plan[skill.name] == "create":
                    store.import_archive(root / skill.archive)
                    created.append(skill.name)
            record = _Record(
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
            for name in reversed(created):
                try:
                    store.delete(name)
                except (SkillNotFoundError, OSError):  # pragma: no cover - best effort while failing
                    pass
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return show(manifest.name, packs_dir)


# ------------------------------------------------------------------------------------------------ reading


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
        record = _Record.model_validate_json((folder / INSTALL_RECORD).read_bytes())
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


def _installed_by_skill(packs_dir: Path) -> dict[str, list[str]]:
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

    Returns the objects the specs name (lists flattened): `Tool`s, typed functions or LangChain tools, as
    `agent.api.load_tools` accepts them. Each module is loaded from its file in the installed pack under a private
    module name, so two packs' `tools.py` never collide and nothing on `sys.path` can stand in for it, and always
    compiled from that `.py` (`_SourceOnlyLoader`): no bytecode beside it can run instead.
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
    with _locked(packs_dir):
        pack = show(name, packs_dir)
        others = {k: [p for p in v if p != name] for k, v in _installed_by_skill(packs_dir).items()}
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


# ------------------------------------------------------------------------------------------------ creating


def _tool_source(spec: str) -> tuple[Path, str]:
    """The single .py file behind a `module:attr` (or `path/to/file.py:attr`) and the spec it gets in the pack."""
    module, _, attr = spec.rpartition(":")
    if not module or not _ATTR_RE.fullmatch(attr):
        raise UserError(f"tool {spec!r} is not 'module:attr'", hint="e.g. --tools my_tools:TOOLS")
    if module.endswith(".py"):
        path = Path(module).expanduser()
    else:
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as error:
            raise UserError(f"cannot find module {module!r} for tool {spec!r}: {error}") from error
        if found is None or not found.origin or not found.has_location:
            raise UserError(f"cannot find the file of module {module!r}", hint="give path/to/file.py:attr instead")
        path = Path(found.origin)
    if not path.is_file() or path.suffix != ".py" or path.name == "__init__.py":
        raise UserError(
            f"tool {spec!r}: {path} is not a single-file module",
            hint="a pack carries each tool module as one .py file; move the tools into one file",
        )
    stem = path.stem
    if not _MODULE_RE.fullmatch(stem):
        raise UserError(f"tool {spec!r}: {path.name} is not a valid module name")
    return path, f"{stem}:{attr}"


def create_pack(
    name: str,
    skills: Sequence[str],
    tools: Sequence[str],
    out: Path | str,
    *,
    store: SkillStore,
    version: str = "0.1.0",
    description: str = "",
    license: str = "Apache-2.0",
    tasks: Sequence[PackTask] = (),
) -> Path:
    """Make a pack of skills from `store` and tool modules; `out` ending in `.tar.gz`/`.tgz` is an archive, else a
    folder (which must not exist yet). Written to a temporary name, then renamed: never half a pack.
    """
    validate_skill_name(name)
    out = Path(out).expanduser()
    if out.exists():
        raise UserError(f"{out} already exists", hint="pick another output path or remove it")
    if not skills and not tools:
        raise UserError("a pack needs at least one skill or tool", hint="pass --skill NAME or --tools module:attr")
    fingerprints = {store.get(s).base_fingerprint for s in skills} | (
        {store.base_fingerprint} if store.base_fingerprint else set()
    )
    if len(fingerprints) > 1:
        raise BaseMismatchError(
            f"the skills of pack {name!r} were trained on different bases: {', '.join(sorted(fingerprints))}",
            hint="a pack is for one base; make one pack per base",
        )
    if not fingerprints:
        raise UserError("a pack without skills needs the base fingerprint", hint="open the store with base_fingerprint")
    sources = [_tool_source(spec) for spec in tools]
    if len({spec.split(":")[0] for _, spec in sources}) != len({p for p, _ in sources}):
        raise UserError("two tool modules have the same file name", hint="rename one of them")
    archive = out.name.endswith((".tar.gz", ".tgz"))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    folder = staging / name if archive else staging
    try:
        folder.mkdir(parents=True)
        entries = []
        for skill in skills:
            relative = f"skills/{skill}.tar.gz"
            store.export(skill, folder / relative)
            entries.append(PackSkill(name=skill, archive=relative, sha256=sha256_file(folder / relative)))
        for path, _ in sources:
            shutil.copyfile(path, folder / path.name)
        manifest = PackManifest(
            name=name,
            version=version,
            description=description,
            license=license,
            base_fingerprint=fingerprints.pop(),
            skills=tuple(entries),
            tools=tuple(spec for _, spec in sources),
            tasks=tuple(tasks),
        )
        write_manifest(folder, manifest)
        if archive:
            data = staging / "pack.tar.gz"
            with tarfile.open(data, "w:gz") as tar:
                for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                    tar.add(file, arcname=f"{name}/{file.relative_to(folder).as_posix()}", recursive=False)
            data.rename(out)
        else:
            staging.rename(out)
        fsync_dir(out.parent)
    except ValidationError as error:
        raise UserError(f"cannot create pack {name!r}: {error.errors()[0]['msg']}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


__all__ = [
    "PACK_FILE",
    "InstalledPack",
    "PackManifest",
    "PackSkill",
    "PackTask",
    "RemoveReport",
    "TaskChecker",
    "builtin_packs",
    "create_pack",
    "dump_manifest",
    "install_pack",
    "list_packs",
    "load_pack_tools",
    "parse_manifest",
    "read_manifest",
    "remove_pack",
    "show",
    "write_manifest",
]
