"""The pack manifest: `pack.toml`, its models (`PackManifest` and what it lists) and reading, checking, writing it.

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

Every path in it stays inside the pack, every name is a slug, and any problem is a `UserError` naming the field:
a manifest is read before anything else in the pack is trusted.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skills.errors import UserError
from skills.files import atomic_write_bytes
from skills.manifest import validate_skill_name

PACK_FILE = "pack.toml"
INSTALL_RECORD = "installed.json"  # written by install_pack; a pack that ships one is refused (it could claim trust)
SCHEMA_VERSION = 1
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,3}([-+.][0-9A-Za-z.+-]{1,64})?$")
MODULE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ATTR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PackModel(BaseModel):
    """The base of every pack model: an unknown field is refused (a typo in `pack.toml` must not pass unnoticed),
    and a read model cannot change."""

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


class PackSkill(PackModel):
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


class TaskChecker(PackModel):
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


class PackTask(PackModel):
    """An example task that shows what the pack is for, optionally with a checker."""

    prompt: str = Field(min_length=1, max_length=4000)
    checker: TaskChecker | None = None
    skills: tuple[str, ...] = Field((), description="skills to run it with (default: all of the pack's)")

    @field_validator("skills")
    @classmethod
    def _skills(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(validate_skill_name(v) for v in value)


class PackManifest(PackModel):
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
    if not MODULE_NAME_RE.fullmatch(module) or not ATTR_NAME_RE.fullmatch(attr):
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
