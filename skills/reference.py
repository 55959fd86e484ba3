"""One skill reference: how a caller names a skill, and the one parser of that grammar.

    references := reference ("+" reference)*           a composition (the sum of the skills), in the caller's order
    reference  := [owner "/"] name ["@" revision]

- `tool-habits`: the skill at its current revision;
- `tool-habits@3`: revision 3, pinned (what a trajectory records, so a promotion cannot change a run's weights);
- `alice/preference`: instance alice's personal skill (whether it resolves is the store's business, see
  `skills.instances`);
- `tool-habits+alice/preference@2`: both, composed.

`name` and `owner` are slugs (a-z 0-9 - _, see `validate_skill_name`); `revision` is a positive integer. The CLI's
`--skill`, the agent's `skills=[...]` and the server's OpenAI `model` name all parse here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from skills.errors import InvalidSkillNameError, UserError
from skills.manifest import validate_skill_name

OWNER_SEPARATOR = "/"
REVISION_SEPARATOR = "@"
COMPOSITION_SEPARATOR = "+"
_REVISION = re.compile(r"[1-9][0-9]{0,8}")


@dataclass(frozen=True)
class SkillRef:
    """A skill as a caller names it: `name`, optionally an `owner` instance and a pinned `revision`."""

    name: str
    revision: int | None = None
    owner: str | None = None

    def __post_init__(self) -> None:
        validate_skill_name(self.name)
        if self.owner is not None:
            _validate_owner(self.owner, self.owner)
        if self.revision is not None and (not isinstance(self.revision, int) or self.revision < 1):
            raise UserError(f"revision {self.revision!r} of {self.name!r} must be a positive integer")

    @classmethod
    def parse_one(cls, text: str) -> SkillRef:
        """`name`, `name@3`, `owner/name` or `owner/name@3`; a `UserError` says which part is wrong."""
        if not isinstance(text, str):
            raise UserError(f"{text!r} is not a skill reference", hint="name a skill as a string, e.g. 'tool-habits'")
        head, at, revision = text.partition(REVISION_SEPARATOR)
        if at and not _REVISION.fullmatch(revision):
            raise UserError(f"{text!r}: the revision after '@' must be a positive integer")
        owner, slash, name = head.rpartition(OWNER_SEPARATOR)
        if slash:
            _validate_owner(owner, text)
        return cls(name=validate_skill_name(name), revision=int(revision) if at else None, owner=owner or None)

    @classmethod
    def parse(cls, text: str) -> list[SkillRef]:
        """Every reference of `a+b@3`, in order. Empty parts and a skill named twice are refused."""
        if not isinstance(text, str) or not text:
            raise UserError("the skill reference is empty", hint="name a skill, or skills joined by '+'")
        parts = text.split(COMPOSITION_SEPARATOR)
        if not all(parts):
            raise UserError(f"{text!r} has an empty part", hint="join skill names with '+', e.g. a+b")
        refs = [cls.parse_one(part) for part in parts]
        check_distinct(refs, text)
        return refs

    @classmethod
    def of(cls, qualified: str, revision: int | None = None) -> SkillRef:
        """The reference for a `(qualified name, revision)` pair, the form stores and backends pass around."""
        ref = cls.parse_one(qualified)
        if ref.revision is not None:
            raise UserError(f"{qualified!r} already names a revision", hint="pass the bare name and the revision")
        return cls(name=ref.name, revision=revision, owner=ref.owner)

    @property
    def qualified(self) -> str:
        """`owner/name`, or `name` for a shared skill: the name a store resolves."""
        return self.name if self.owner is None else f"{self.owner}{OWNER_SEPARATOR}{self.name}"

    def pair(self) -> tuple[str, int | None]:
        """`(qualified name, revision)`: what a trajectory's skill use and a generation request carry."""
        return self.qualified, self.revision

    def format(self, *, pin: bool = True) -> str:
        """The text form; with `pin`, a pinned revision is written (`name@3`)."""
        if pin and self.revision is not None:
            return f"{self.qualified}{REVISION_SEPARATOR}{self.revision}"
        return self.qualified

    def __str__(self) -> str:
        return self.format()


def format_refs(refs: Iterable[SkillRef], *, pin: bool = True) -> str:
    """`a@1+b`: the references joined as one composition (`parse` reads it back)."""
    return COMPOSITION_SEPARATOR.join(ref.format(pin=pin) for ref in refs)


def check_distinct(refs: Iterable[SkillRef], text: str) -> None:
    """Refuse a skill named twice in one composition (at any revisions): a sum of a skill with itself is a mistake."""
    names = [ref.qualified for ref in refs]
    if len(set(names)) != len(names):
        raise UserError(f"{text!r} names a skill twice", hint="name each skill once")


def _validate_owner(owner: str, text: str) -> None:
    try:
        validate_skill_name(owner)
    except InvalidSkillNameError as error:
        raise InvalidSkillNameError(
            f"{text!r}: owner {owner!r} is not an instance name", hint="owners are slugs, e.g. alice/preference"
        ) from error
