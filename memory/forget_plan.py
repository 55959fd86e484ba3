"""The read-only half of forgetting: which episodes, which revisions contain them, what each skill becomes.

`plan` writes nothing: it is the dry run `habitloop forget` shows before asking, and the content of the journal the
forget then runs (`memory.forget`). A revision contains the episodes its provenance lists and those of every
ancestor (continued training carries them), so the affected revisions of a skill are closed under descendants and
the clean ones of the current chain are a prefix of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from memory.buffer import EpisodeBuffer
from memory.dataset import derive_name
from memory.errors import EpisodeNotFoundError
from memory.trajectory import Trajectory
from skills.errors import CorruptSkillError, SkillNotFoundError, UserError
from skills.store import SkillStore

log = logging.getLogger("habitloop.forget")


FORGET_DIR = ".forget"  # under a store's root: the journals of forgets not yet finished (see memory.forget)


class SkillForgetPlan(BaseModel):
    """What forgetting does to one skill. `action`: `rebuild` (retrain from `parent` on `retrain`), `restore`
    (nothing left to train on: `current` goes back to `restore_to`), `delete` (no clean revision left: the whole
    skill goes), `drop` (the current revision is clean: only the `affected` revisions go)."""

    skill: str = Field(description="the name in its store")
    label: str = Field(description="the name the residency and the buffer know it by (`alice/x` for an instance)")
    action: Literal["rebuild", "restore", "delete", "drop"]
    affected: list[int] = Field(description="revisions that contain a forgotten episode: deleted")
    parent: int | None = Field(None, description="the last revision of the current chain without them")
    restore_to: int | None = None
    retrain: list[str] = Field(default_factory=list, description="remaining episodes the buffer still holds")
    missing: list[str] = Field(default_factory=list, description="remaining episodes the buffer no longer holds")
    description: str | None = Field(None, description="the skill's new description (the old one quotes them)")


class ForgetPlan(BaseModel):
    """Everything one forget will do; `plan` computes it without writing anything."""

    instance: str | None
    episodes: list[str]
    threads: list[str] = Field(default_factory=list, description="the conversation threads they belong to")
    skills: list[SkillForgetPlan]


class SkillForgotten(BaseModel):
    """What happened to one skill."""

    skill: str
    action: Literal["rebuild", "restore", "delete", "drop"]
    revisions_deleted: list[int]
    new_revision: int | None = None
    restored_to: int | None = None
    retrained_on: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list, description="lost from the rebuilt revision: not in the buffer")


class ForgetReport(BaseModel):
    """The result of a forget (or, with `dry_run`, of its plan): what `habitloop forget --json` prints."""

    dry_run: bool = False
    journal: str | None = None
    instance: str | None = None
    episodes: list[str]
    threads: list[str] = Field(default_factory=list, description="conversation threads deleted with them")
    skills: list[SkillForgotten]
    caches_removed: list[str] = Field(default_factory=list)

    @classmethod
    def of_plan(cls, planned: ForgetPlan) -> ForgetReport:
        """The report a dry run prints: the plan, nothing done."""
        skills = [
            SkillForgotten(
                skill=s.skill,
                action=s.action,
                revisions_deleted=s.affected,
                restored_to=s.restore_to,
                retrained_on=s.retrain,
                missing=s.missing,
            )
            for s in planned.skills
        ]
        return cls(
            dry_run=True, instance=planned.instance, episodes=planned.episodes, threads=planned.threads, skills=skills
        )


# ------------------------------------------------------------------------------------------------ resolve and plan


def find_episodes(
    buffer: EpisodeBuffer, instance: str | None, *, ids: Sequence[str] = (), match: str | None = None
) -> list[str]:
    """The ids to forget: `ids` (each must be this instance's) or the episodes of this instance whose task or user
    messages contain `match` (case-insensitive). Exactly one of the two; bad input is refused in one line."""
    if isinstance(ids, str):
        raise UserError("pass the episode ids as a list, not one string", hint=f"e.g. forget([{ids!r}])")
    if bool(ids) == bool(match):
        raise UserError("name the episodes to forget by id or by match, not both and not neither")
    if match:
        needle = match.casefold()
        found = [e.id for e in buffer.list(instance=instance) if needle in _user_text(e).casefold()]
        if not found:
            raise UserError(f"no episode of this instance matches {match!r}", hint="see `habitloop buffer list`")
        return found
    wanted = list(dict.fromkeys(ids))
    for episode_id in wanted:
        try:
            episode = buffer.get(episode_id)
        except EpisodeNotFoundError:
            raise UserError(f"no episode {episode_id!r} in the buffer", hint="see `habitloop buffer list`") from None
        if episode.instance != instance:
            raise UserError(f"episode {episode_id!r} belongs to another instance", hint="forget it as that instance")
    return wanted


def _user_text(episode: Trajectory) -> str:
    users = [str(m.get("content", "")) for m in episode.messages if m.get("role") == "user"]
    return "\n".join([episode.task, *users])


def plan(
    buffer: EpisodeBuffer, store: SkillStore, episodes: Sequence[str], *, instance: str | None = None
) -> ForgetPlan:
    """What forgetting `episodes` would do to each skill of `store`; reads only."""
    held = {e.id: e for e in buffer.list(instance=instance)}
    forgotten = {i: held[i] for i in episodes if i in held}
    skills = []
    for manifest in store.list():
        planned = _plan_skill(held, store, manifest.name, forgotten, instance)
        if planned is not None:
            skills.append(planned)
    threads = list(dict.fromkeys(e.thread_id for e in forgotten.values()))
    return ForgetPlan(instance=instance, episodes=list(episodes), threads=threads, skills=skills)


def _plan_skill(
    held: dict[str, Trajectory],
    store: SkillStore,
    skill: str,
    forgotten: dict[str, Trajectory],
    instance: str | None,
) -> SkillForgetPlan | None:
    manifest = store.get(skill)
    own: dict[int, tuple[str, ...]] = {}
    parents: dict[int, int | None] = {}
    for number in manifest.revision_numbers():
        try:
            record = store.revision(skill, number)
        except (CorruptSkillError, SkillNotFoundError) as error:
            log.warning("forget cannot read %s@%s: %s", skill, number, error)
            continue
        own[number], parents[number] = record.provenance.episode_ids, record.parent

    def chain(number: int | None) -> list[int]:  # the revision and its ancestors, newest first
        out: list[int] = []
        while number is not None and number in own and number not in out:
            out.append(number)
            number = parents[number]
        return out

    affected = sorted(n for n in own if any(forgotten.keys() & set(own[a]) for a in chain(n)))
    if not affected:
        return None
    label = f"{instance}/{skill}" if instance else skill
    current = chain(manifest.current)
    clean = next((n for n in current if n not in affected), None)
    quoted = any(_quotes(manifest.description, e.task) for e in forgotten.values())
    if manifest.current not in affected:
        description = "" if quoted else None
        return SkillForgetPlan(skill=skill, label=label, action="drop", affected=affected, description=description)
    remaining = list(dict.fromkeys(i for n in reversed(current) if n in affected for i in own[n] if i not in forgotten))
    retrain, missing = [i for i in remaining if i in held], [i for i in remaining if i not in held]
    if retrain:
        action: Literal["rebuild", "restore", "delete"] = "rebuild"
        restore_to = None
    else:
        unaffected = [n for n in own if n not in affected]
        promoted = [n for n in unaffected if manifest.status_of(n) == "promoted"]
        restore_to = clean if clean is not None else max(promoted or unaffected, default=None)
        action = "restore" if restore_to is not None else "delete"
    description = (derive_name([held[i] for i in retrain], set())[1] if retrain else "") if quoted else None
    return SkillForgetPlan(
        skill=skill,
        label=label,
        action=action,
        affected=affected,
        parent=clean,
        restore_to=restore_to,
        retrain=retrain,
        missing=missing,
        description=description,
    )


def _quotes(description: str, task: str) -> bool:
    """Whether a skill's description quotes a task (`derive_name` quotes the first episodes' tasks)."""
    return bool(task.strip()) and (task[:60] in description or repr(task[:60]) in description)


class _JournalPlan(BaseModel):
    """The part of a forget journal that says which episodes are on their way out."""

    plan: ForgetPlan


def pending_forgets(root: Path) -> set[str]:
    """The episodes of forgets that have not finished (a killed run's journal under `root`): consolidation must not
    train on them, or gate on them, while `Forgetter.recover()` has yet to remove them."""
    folder = root / FORGET_DIR
    ids: set[str] = set()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            ids.update(_JournalPlan.model_validate_json(path.read_bytes()).plan.episodes)
        except (OSError, ValidationError) as error:
            raise UserError(
                f"cannot read the forget journal {path}: {type(error).__name__}",
                hint="restore it from a backup, or remove it to give that forget up (its episodes then stay)",
            ) from None
    return ids


def without(episodes: Sequence[Trajectory], ids: set[str]) -> list[Trajectory]:
    """`episodes` less those whose id is in `ids`, in order."""
    return [e for e in episodes if e.id not in ids]
