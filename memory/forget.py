"""Forgetting: episodes leave the buffer and every adapter revision whose weights carry them.

    resolve the episodes -> plan (`memory.forget_plan`; per skill: the revisions that contain them, the last clean
    one, what remains)
    -> journal -> rebuild (retrain from the last clean revision on the remaining episodes, commit it promoted)
    -> delete the revisions that contained them (a tombstone each) -> drop them from the residency and the caches
    -> discard the episodes from the buffer -> remove the journal

A revision *contains* an episode when its own provenance lists it or an ancestor's does: continued training carries
every ancestor's data in the weights. So forgetting an episode of revision 2 of 1 <- 2 <- 3 deletes 2 and 3 and
retrains from 1 on the other episodes of 2 and 3. With no clean ancestor the rebuild starts from fresh LoRA weights;
with nothing left to train on the skill goes back to its last clean revision, or is deleted whole (a tombstone in
the store's `forgotten.jsonl`). An episode the buffer no longer holds cannot be retrained on: it is reported missing.

Crash safety: the plan is written (atomically) to `<store>/.forget/<id>.json` before anything is touched, and every
step is idempotent against what is on disk: a rebuilt revision carries the journal's id in its provenance (`note`),
so a rerun finds it instead of training again; tombstones are written once; discarding an absent episode is a no-op.
`Forgetter.recover()` (which `forget` runs first) finishes any journal a killed run left; the crash points of
`memory.consolidate.crash_point` (`forget:journaled`, `forget:training`, `forget:rebuilt`, `forget:committed`,
`forget:deleted`, `forget:discarded`) are where the tests kill it. A forget holds the consolidation lock
(`memory.claims.LOCKS`) of every skill it changes, and plans again once it holds them.

Tombstones say which revision, when and why (the caller's `reason`, never a `match` text or an episode's content).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout
from pydantic import BaseModel, Field

from memory.buffer import EpisodeBuffer
from memory.claims import LOCKS
from memory.consolidate import crash_point
from memory.errors import EpisodeNotFoundError
from memory.forget_plan import (
    FORGET_DIR,
    ForgetPlan,
    ForgetReport,
    SkillForgetPlan,
    SkillForgotten,
    find_episodes,
    plan,
)
from memory.retrain import recipe_retrainer
from memory.trajectory import Trajectory
from skills.errors import UserError
from skills.files import atomic_write_json
from skills.manifest import Evaluation
from skills.residency import Residency
from skills.store import SkillStore
from skills.train import TrainResult

__all__ = [
    "FORGET_DIR",
    "ForgetPlan",
    "ForgetReport",
    "Forgetter",
    "Retrainer",
    "SkillForgetPlan",
    "SkillForgotten",
    "find_episodes",
    "plan",
    "recipe_retrainer",
]

log = logging.getLogger("habitloop.forget")


class Retrainer(Protocol):
    """Trains a skill's replacement revision: from revision `parent` of `skill` (None: fresh LoRA weights) on
    `episodes`, into a folder under `work`. The default is `recipe_retrainer`; the consolidator may provide its own."""

    def __call__(self, skill: str, parent: int | None, episodes: Sequence[Trajectory], work: Path) -> TrainResult: ...


class _Journal(BaseModel):
    id: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    reason: str
    plan: ForgetPlan


# ------------------------------------------------------------------------------------------------ the run


class Forgetter:
    """Forgets episodes of one instance (None: the shared agent) from `buffer` and from the skills of `store` (that
    instance's own store, or the shared one). `retrainer` (None: plans and non-rebuilding forgets only) trains the
    rebuilt revisions. `residency` and `composer` (optional) lose the deleted revisions too;
    `caches` are folders of derived adapters (materialized compositions) removed whole, rebuilt on their next use.
    `threads(thread_ids)` deletes the conversation threads the episodes belong to (the agent's checkpointer)."""

    def __init__(
        self,
        buffer: EpisodeBuffer,
        store: SkillStore,
        *,
        retrainer: Retrainer | None,
        instance: str | None = None,
        residency: Residency | None = None,
        composer: Any = None,
        caches: Sequence[Path] = (),
        threads: Callable[[Sequence[str]], object] | None = None,
        lock_timeout: float = 60.0,
    ) -> None:
        self.buffer = buffer
        self.store = store
        self.retrainer = retrainer
        self.instance = instance
        self.residency = residency
        self.composer = composer
        self.caches = list(caches)
        self.threads = threads
        self.lock_timeout = lock_timeout
        self.folder = store.root / FORGET_DIR

    def plan(self, ids: Sequence[str] = (), match: str | None = None) -> ForgetPlan:
        """The dry run: which episodes, which revisions go, which skills are rebuilt. Writes nothing."""
        episodes = find_episodes(self.buffer, self.instance, ids=ids, match=match)
        return plan(self.buffer, self.store, episodes, instance=self.instance)

    def forget(self, ids: Sequence[str] = (), match: str | None = None, *, reason: str = "") -> ForgetReport:
        """Forget the episodes (by id, or every one matching `match`); finishes any earlier journal first."""
        self.recover()
        with ExitStack() as claims:
            held: set[str] = set()
            for _ in range(3):  # planned again under the claims: a consolidation may have committed meanwhile
                planned = self.plan(ids, match)
                new = sorted({s.skill for s in planned.skills} - held)
                if not new:
                    break
                for skill in new:
                    claims.enter_context(self._claim(skill))
                    held.add(skill)
            reason = reason or f"forgotten on request ({len(planned.episodes)} episodes)"
            journal = _Journal(id=uuid.uuid4().hex[:12], reason=reason, plan=planned)
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.folder / f"{journal.id}.json", journal.model_dump(mode="json"))
            crash_point("forget:journaled")
            return self._run(journal)

    def recover(self) -> list[ForgetReport]:
        """Finish every journal a killed forget left (oldest first); returns their reports."""
        if not self.folder.is_dir():
            return []
        journals = [_Journal.model_validate_json(p.read_bytes()) for p in sorted(self.folder.glob("*.json"))]
        reports = []
        for journal in sorted(journals, key=lambda j: j.created_at):
            with ExitStack() as claims:
                for skill in sorted({s.skill for s in journal.plan.skills}):
                    claims.enter_context(self._claim(skill))
                reports.append(self._run(journal))
        return reports

    @contextmanager
    def _claim(self, skill: str) -> Iterator[None]:
        """Hold the skill's consolidation lock (`memory.claims`): no consolidation trains from a revision that is
        being forgotten, and none commits one this forget would not see."""
        (self.store.root / LOCKS).mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.store.root / LOCKS / f"{skill}.lock"))
        try:
            lock.acquire(timeout=self.lock_timeout)
        except Timeout:
            raise UserError(
                f"skill {skill!r} is being consolidated by another process", hint="forget again when it is done"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def _run(self, journal: _Journal) -> ForgetReport:
        """The steps, in order; each one idempotent against the store and the buffer."""
        done = [self._settle(journal, s) for s in journal.plan.skills]
        crash_point("forget:committed")
        for skill_plan in journal.plan.skills:
            self._delete_revisions(journal, skill_plan)
        crash_point("forget:deleted")
        removed = self._drop_copies(journal)
        self._discard(journal, done)
        crash_point("forget:discarded")
        shutil.rmtree(self.folder / journal.id, ignore_errors=True)
        (self.folder / f"{journal.id}.json").unlink(missing_ok=True)
        plan_ = journal.plan
        return ForgetReport(
            journal=journal.id,
            instance=plan_.instance,
            episodes=plan_.episodes,
            threads=plan_.threads,
            skills=done,
            caches_removed=removed,
        )

    # --------------------------------------------------------------------------------------------- the steps

    def _settle(self, journal: _Journal, planned: SkillForgetPlan) -> SkillForgotten:
        """Move the skill off the revisions that go: rebuild it (once: a rerun finds the committed rebuild by the
        journal's id), roll it back to its last clean revision, or delete it whole with a tombstone."""
        result = SkillForgotten(
            skill=planned.skill, action=planned.action, revisions_deleted=planned.affected, missing=planned.missing
        )
        if planned.action == "rebuild":
            number = self._rebuilt(journal, planned.skill)
            episodes = [] if number is not None else self._remaining(planned)
            if number is not None or episodes:
                number = number or self._rebuild(journal, planned, episodes)
                return result.model_copy(update={"new_revision": number, "retrained_on": planned.retrain})
            # every remaining episode left the buffer since the plan: nothing to retrain on
            fallback = "restore" if planned.parent is not None else "delete"
            planned = planned.model_copy(update={"action": fallback, "restore_to": planned.parent})
            result = result.model_copy(update={"action": fallback, "missing": planned.missing + planned.retrain})
        if planned.action == "restore" and self.store.exists(planned.skill):
            assert planned.restore_to is not None
            if self.store.get(planned.skill).current != planned.restore_to:
                self.store.rollback(planned.skill, to=planned.restore_to)
            return result.model_copy(update={"restored_to": planned.restore_to})
        if planned.action == "delete":
            self.store.forget_skill(planned.skill, note=f"{journal.reason} [forget {journal.id}]")
        return result

    def _remaining(self, planned: SkillForgetPlan) -> list[Trajectory]:
        """The episodes to retrain on that the buffer still holds (one may have left it since the plan)."""
        episodes = []
        for episode_id in planned.retrain:
            try:
                episodes.append(self.buffer.get(episode_id))
            except EpisodeNotFoundError:
                log.warning("episode %s left the buffer before %s was rebuilt", episode_id, planned.skill)
        return episodes

    def _rebuild(self, journal: _Journal, planned: SkillForgetPlan, episodes: Sequence[Trajectory]) -> int:
        """Retrain from the last clean revision (or fresh weights) and commit the result promoted, tagged with the
        journal's id so that a rerun finds it."""
        if self.retrainer is None:
            raise UserError(f"rebuilding {planned.skill!r} trains an adapter; this forgetter has no retrainer")
        work = self.folder / journal.id / planned.skill
        shutil.rmtree(work, ignore_errors=True)  # what a killed run trained there is not trusted
        work.mkdir(parents=True)
        result = self.retrainer(planned.skill, planned.parent, episodes, work)
        provenance = result.provenance.model_copy(
            update={"episode_ids": tuple(e.id for e in episodes), "note": _tag(journal)}
        )
        note = f"rebuilt without {len(set(journal.plan.episodes))} forgotten episodes"
        recipe = self.store.revision(planned.skill).evaluation.details.get("config")  # the recipe, never the data
        number = self.store.add_revision(
            planned.skill,
            result.adapter_dir,
            parent=planned.parent,
            fresh=planned.parent is None,
            provenance=provenance,
            evaluation=Evaluation(details={"reason": note} | ({"config": recipe} if recipe else {})),
            promote=True,
            note=note,
        ).number
        crash_point("forget:rebuilt")
        return number

    def _rebuilt(self, journal: _Journal, skill: str) -> int | None:
        """The revision this journal already committed to `skill` (a rerun after a crash), if any."""
        for entry in self.store.history(skill):
            if entry.revision is not None and entry.revision.provenance.note == _tag(journal):
                return entry.number
        return None

    def _delete_revisions(self, journal: _Journal, planned: SkillForgetPlan) -> None:
        if planned.action != "delete" and self.store.exists(planned.skill):
            self.store.forget_revisions(
                planned.skill, planned.affected, note=journal.reason, description=planned.description
            )

    def _drop_copies(self, journal: _Journal) -> list[str]:
        """Every in-process and cached copy of the deleted revisions' weights goes: hot and warm adapters, cached
        compositions, materialized composition folders."""
        if self.residency is not None:
            for planned in journal.plan.skills:
                for number in _deleted(planned):
                    self.residency.forget(planned.label, number)
        if self.composer is not None:
            self.composer.clear()
        removed = []
        for cache in self.caches:
            if cache.exists():
                shutil.rmtree(cache, ignore_errors=True)
                removed.append(str(cache))
        return removed

    def _discard(self, journal: _Journal, done: Sequence[SkillForgotten]) -> None:
        """The forgotten episodes leave the buffer (and their threads the checkpointer); the retrained ones are marked
        consolidated into the rebuild."""
        if self.threads is not None and journal.plan.threads:
            self.threads(journal.plan.threads)
        self.buffer.discard(journal.plan.episodes)
        for planned, result in zip(journal.plan.skills, done, strict=True):
            if result.new_revision is None:
                continue
            for episode_id in planned.retrain:
                try:
                    episode = self.buffer.get(episode_id)
                except EpisodeNotFoundError:
                    continue
                label = (episode.consolidated_into or planned.label).split("@")[0]
                self.buffer.mark_consolidated([episode_id], into=f"{label}@{result.new_revision}")


def _tag(journal: _Journal) -> str:
    return f"forget:{journal.id}"


def _deleted(planned: SkillForgetPlan) -> list[int]:
    if planned.action != "delete":
        return planned.affected
    return list(range(1, max(planned.affected, default=0) + 1))  # the whole skill: every number it may have had
