"""The skill one consolidation goes into, checked before any training: a new skill, or the current revision of an
existing one that the candidate continues from."""

from __future__ import annotations

from dataclasses import dataclass

from skills.errors import CorruptSkillError
from skills.store import SkillStore


@dataclass(frozen=True)
class Target:
    """A new skill (`created`, with the description it will get) or an existing one, continued from its current
    revision `parent`."""

    name: str
    created: bool
    parent: int | None
    description: str

    @classmethod
    def of(cls, store: SkillStore, name: str, description: str) -> Target:
        """Check that `name` can take a new revision and read what it continues from; `description` is used only
        for a new skill."""
        check_target(store, name)
        created = not store.exists(name)
        return cls(
            name=name,
            created=created,
            parent=None if created else store.get(name).current,
            description=description if created else "",
        )


def check_target(store: SkillStore, name: str) -> None:
    """Refuse, before any training, a target that cannot take a new revision: its manifest, current revision or
    files unreadable, made for another base, or a folder without a manifest in the way of a new skill."""
    if store.exists(name):
        store.read_adapter(name)  # manifest, current record, checksums, base fingerprint
    elif (store.root / name.rsplit("/", 1)[-1]).exists():
        raise CorruptSkillError(
            f"skill folder {name!r} has no manifest.json",
            hint=f"delete it with `habitloop skills delete {name}`",
        )


def taken_names(store: SkillStore) -> set[str]:
    """Names a new skill cannot have: every skill, and every folder in the store (a broken skill's too)."""
    names = {m.name for m in store.list()}
    return names | {p.name for p in store.root.iterdir() if not p.name.startswith(".")}
