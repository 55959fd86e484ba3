"""Personal instances: one user's own skills on top of the shared ones, on the same base.

An instance (e.g. "alice") keeps its skills in `$HABITLOOP_HOME/instances/alice/`, a `SkillStore` with the same
layout as the shared `skills/`. Skill names are resolved in two forms:

- qualified, `alice/preference`: alice's personal skill `preference` (only alice may name it);
- plain, `preference`: alice's own skill of that name if she has one, else the shared skill.

`LayeredStore` is the read view that resolution and residency use. One view with `instance=None` can read every
instance's skills by their qualified names: that is the view a process-wide `Residency` is given, so many instances
share one base and one hot/warm/cold LRU, while every per-instance view refuses names of other instances.

Instance names are validated before they touch a path: 1-32 characters of ASCII `a-z 0-9 - _`, starting and ending
with a letter or digit. That refuses `../x`, `a/b`, the empty name, very long names and look-alike Unicode (a
Cyrillic `а` is not an `a`), so one instance's folder can never be, or be inside, another's.
"""

from __future__ import annotations

import builtins
import re
from pathlib import Path
from typing import Any

from skills.errors import InstanceAccessError, InvalidInstanceNameError, SkillNotFoundError, UserError
from skills.manifest import RevisionRecord, SkillManifest, validate_skill_name
from skills.reader import AdapterWeights, HistoryEntry
from skills.store import SkillStore

_INSTANCE_RE = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,30}[a-z0-9])?")
SEPARATOR = "/"


def validate_instance_name(name: object) -> str:
    """Return `name` if it is a safe instance name, else raise `InvalidInstanceNameError` saying why."""
    if not isinstance(name, str) or not name.isascii() or not _INSTANCE_RE.fullmatch(name):
        raise InvalidInstanceNameError(
            f"invalid instance name {name!r}",
            hint="use 1-32 characters of a-z, 0-9, '-' or '_' (ASCII), starting and ending with a letter or digit",
        )
    return name


def qualify(instance: str, skill: str) -> str:
    """`alice`, `preference` -> `alice/preference`."""
    return f"{validate_instance_name(instance)}{SEPARATOR}{validate_skill_name(skill)}"


def split_name(name: str) -> tuple[str | None, str]:
    """`alice/preference` -> ("alice", "preference"); `preference` -> (None, "preference"). Both parts validated."""
    if not isinstance(name, str):
        raise UserError(f"invalid skill name {name!r}")
    owner, sep, skill = name.partition(SEPARATOR)
    if not sep:
        return None, validate_skill_name(name)
    return validate_instance_name(owner), validate_skill_name(skill)


def instance_store(instances_dir: Path | str, instance: str, *, base_fingerprint: str | None) -> SkillStore:
    """The personal `SkillStore` of `instance` under `instances_dir` (normally `$HABITLOOP_HOME/instances`)."""
    return SkillStore(Path(instances_dir) / validate_instance_name(instance), base_fingerprint=base_fingerprint)


class LayeredStore:
    """Read view over the shared store and personal stores: what residency and skill resolution read through.

    With `instance="alice"`, plain names resolve personal-first and `alice/x` names alice's own skill; any
    `bob/x` raises `InstanceAccessError`. With `instance=None` (the process-wide view for a shared `Residency`),
    plain names are shared skills and `bob/x` is bob's: callers resolve names through their own instance's view
    first (`canonical`), so the shared view only ever sees names an instance was allowed to produce.
    """

    def __init__(self, shared: SkillStore, instances_dir: Path | str, *, instance: str | None = None) -> None:
        self.shared = shared
        self.instances_dir = Path(instances_dir)
        self.instance = None if instance is None else validate_instance_name(instance)
        self.base_fingerprint = shared.base_fingerprint
        self.root = shared.root
        self._personal: dict[str, SkillStore] = {}

    def __repr__(self) -> str:
        return f"LayeredStore({self.shared!r}, {str(self.instances_dir)!r}, instance={self.instance!r})"

    def personal(self, instance: str | None = None) -> SkillStore:
        """The personal store of `instance` (default: this view's own); created on first use."""
        owner = instance or self.instance
        if owner is None:
            raise UserError("this store view belongs to no instance", hint="pass instance=...")
        if self.instance is not None and owner != self.instance:
            raise InstanceAccessError(f"instance {self.instance!r} cannot open the skills of instance {owner!r}")
        owner = validate_instance_name(owner)
        if owner not in self._personal:
            self._personal[owner] = instance_store(
                self.instances_dir, owner, base_fingerprint=self.shared.base_fingerprint
            )
        return self._personal[owner]

    def canonical(self, name: str) -> str:
        """The unambiguous name of what `name` means for this view: `alice/x` for a personal skill, else `x`."""
        owner, skill = split_name(name)
        if owner is not None:
            if self.instance is not None and owner != self.instance:
                raise InstanceAccessError(
                    f"instance {self.instance!r} cannot use {name!r}: it belongs to instance {owner!r}",
                    hint=f"use a shared skill or one of {self.instance!r}'s own",
                )
            return f"{owner}{SEPARATOR}{skill}"
        if self.instance is not None and self._has_personal(skill):
            return f"{self.instance}{SEPARATOR}{skill}"
        return skill

    def _has_personal(self, skill: str) -> bool:
        folder = self.instances_dir / self.instance if self.instance else None
        return bool(folder and (folder / skill / "manifest.json").is_file())

    def _route(self, name: str) -> tuple[SkillStore, str]:
        owner, skill = split_name(self.canonical(name))
        return (self.shared if owner is None else self.personal(owner)), skill

    # The reading surface residency and the agent use; every call goes to the one store the name resolves to.

    def exists(self, name: str) -> bool:
        store, skill = self._route(name)
        return store.exists(skill)

    def get(self, name: str) -> SkillManifest:
        store, skill = self._route(name)
        try:
            return store.get(skill)
        except SkillNotFoundError as error:
            raise SkillNotFoundError(f"no skill {name!r} for instance {self.instance!r}", hint=error.hint) from error

    def revision(self, name: str, number: int | None = None) -> RevisionRecord:
        store, skill = self._route(name)
        return store.revision(skill, number)

    def revision_dir(self, name: str, number: int | None = None) -> Path:
        store, skill = self._route(name)
        return store.revision_dir(skill, number)

    def history(self, name: str) -> builtins.list[HistoryEntry]:
        store, skill = self._route(name)
        return store.history(skill)

    def read_adapter(self, name: str, number: int | None = None) -> AdapterWeights:
        store, skill = self._route(name)
        return store.read_adapter(skill, number)

    def list(self) -> list[SkillManifest]:
        """The shared skills and (for an instance's view) its own; personal ones shadow shared ones of that name."""
        personal = self.personal().list() if self.instance else []
        mine = {m.name for m in personal}
        return [*personal, *(m for m in self.shared.list() if m.name not in mine)]


class PersonalView:
    """One instance's own skills, for writers (consolidation): `x` and `alice/x` both mean alice's skill `x`.

    Names of other instances are refused, and nothing here can reach the shared store: what an instance learns
    (from its own episodes) never changes a skill other instances use. A shared skill alice consolidated into
    becomes her personal skill of the same name, which then shadows the shared one for her alone.
    """

    def __init__(self, store: SkillStore, instance: str) -> None:
        self.personal = store
        self.instance = validate_instance_name(instance)
        self.base_fingerprint = store.base_fingerprint
        self.root = store.root

    def __repr__(self) -> str:
        return f"PersonalView({self.personal!r}, instance={self.instance!r})"

    def bare(self, name: str) -> str:
        owner, skill = split_name(name)
        if owner not in (None, self.instance):
            raise InstanceAccessError(f"instance {self.instance!r} cannot write {name!r}: it belongs to {owner!r}")
        return skill

    def exists(self, name: str) -> bool:
        return self.personal.exists(self.bare(name))

    def get(self, name: str) -> SkillManifest:
        return self.personal.get(self.bare(name))

    def list(self) -> list[SkillManifest]:
        return self.personal.list()

    def revision(self, name: str, number: int | None = None) -> RevisionRecord:
        return self.personal.revision(self.bare(name), number)

    def revision_dir(self, name: str, number: int | None = None) -> Path:
        return self.personal.revision_dir(self.bare(name), number)

    def history(self, name: str) -> builtins.list[HistoryEntry]:
        return self.personal.history(self.bare(name))

    def read_adapter(self, name: str, number: int | None = None) -> AdapterWeights:
        return self.personal.read_adapter(self.bare(name), number)

    def create(self, name: str, adapter_dir: Path | str, **kwargs: Any) -> SkillManifest:
        return self.personal.create(self.bare(name), adapter_dir, **kwargs)

    def add_revision(self, name: str, adapter_dir: Path | str, **kwargs: Any) -> RevisionRecord:
        return self.personal.add_revision(self.bare(name), adapter_dir, **kwargs)
