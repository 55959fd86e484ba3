"""The short-term episode buffer: where finished runs wait, searchable by task, until they are learned or dropped.

`EpisodeBuffer` is the interface every backend implements; `InMemoryBuffer` is the reference backend (tests, one-off
scripts); `memory.chroma.ChromaBuffer` persists with chromadb. One conformance suite (`tests/test_buffer.py`) runs
against both, so a behaviour described here holds for every backend.

Rules every backend keeps:
- An episode is keyed by its trajectory id; adding the same id again replaces it (a judge or the user changed the
  outcome), it never duplicates.
- Listings are newest first (by `started_at`, ties broken by id).
- Instances: an episode belongs to the instance (a user id) it was recorded under, or to none. A query with
  `instance=X` returns only X's episodes; `instance=None` returns only episodes recorded without an instance;
  `ALL_INSTANCES` (the default of `list`, `stats`, and `search`) returns everything and is meant for operators
  (the CLI, consolidation). **The agent always passes its own instance (None included) when it recalls.**
- Capacity (`enforce_capacity`): an episode that waits for consolidation is never dropped (`awaits_consolidation`:
  an unconsolidated success, or an instance's unconsolidated turn that did not fail, which is what its user said and
  the facts recipe learns from). See `plan_evictions` for the exact order.
"""

from __future__ import annotations

import builtins
import enum
import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeAlias

import numpy as np
from pydantic import BaseModel, Field

from memory.embed import TextEmbedder
from memory.errors import EpisodeNotFoundError
from memory.trajectory import OutcomeStatus, Trajectory
from skills.errors import UserError


class _AllInstances(enum.Enum):
    ALL = "all"

    def __repr__(self) -> str:
        return "ALL_INSTANCES"


ALL_INSTANCES = _AllInstances.ALL
"""Pass as `instance=` to see every instance's episodes (operators only; the agent passes its own instance)."""

InstanceFilter: TypeAlias = str | None | Literal[_AllInstances.ALL]
STATUSES: tuple[OutcomeStatus, ...] = ("success", "failure", "unknown")
_CONSOLIDATED_INTO = re.compile(r"^[^@\s]+@\d+$")
_SECONDS_PER_DAY = 86_400.0


class BufferStats(BaseModel):
    """Counts over the buffer (or one instance of it): what `habitloop buffer stats --json` prints."""

    total: int = Field(description="episodes stored")
    by_status: dict[str, int] = Field(description="episodes per outcome status; every status is present")
    unconsolidated: int = Field(description="episodes not yet learned into a skill revision")
    consolidated: int = Field(description="episodes already learned into a skill revision")
    unconsolidated_successes: int = Field(description="the material the next consolidation can learn from")
    oldest: datetime | None = Field(None, description="earliest `started_at`, None when empty")
    newest: datetime | None = Field(None, description="latest `started_at`, None when empty")


@dataclass(frozen=True)
class EpisodeSummary:
    """The few fields of an episode that filtering, stats and capacity need (backends can read them cheaply)."""

    id: str
    status: OutcomeStatus
    consolidated: bool
    instance: str | None
    created_at: float  # `started_at` as a POSIX timestamp (UTC)
    skills: tuple[str, ...] = ()

    @classmethod
    def of(cls, trajectory: Trajectory) -> EpisodeSummary:
        return cls(
            id=trajectory.id,
            status=trajectory.outcome.status,
            consolidated=trajectory.consolidated_into is not None,
            instance=trajectory.instance,
            created_at=timestamp(trajectory.started_at),
            skills=tuple(dict.fromkeys(use.name for use in trajectory.skills)),
        )

    def matches(
        self,
        *,
        status: OutcomeStatus | None = None,
        skill: str | None = None,
        consolidated: bool | None = None,
        instance: InstanceFilter = ALL_INSTANCES,
    ) -> bool:
        return (
            (status is None or self.status == status)
            and (skill is None or skill in self.skills)
            and (consolidated is None or self.consolidated == consolidated)
            and (instance is ALL_INSTANCES or self.instance == instance)
        )


def timestamp(moment: datetime) -> float:
    """A datetime as a POSIX timestamp; a naive datetime is taken as UTC (trajectories record UTC)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def newest_first(summaries: Iterable[EpisodeSummary]) -> list[EpisodeSummary]:
    """The buffer's one listing order: newest `started_at` first, ties broken by id (descending)."""
    return sorted(summaries, key=lambda s: (s.created_at, s.id), reverse=True)


def similarity_score(cosine: float) -> float:
    """A search score in [0, 1]: the cosine similarity of unit vectors, negatives (unrelated texts) clamped to 0."""
    if math.isnan(cosine):
        return 0.0
    return min(1.0, max(0.0, cosine))


def check_capacity(max_unconsolidated: int | None, max_age_days: float | None) -> None:
    if max_unconsolidated is not None and max_unconsolidated < 0:
        raise UserError(f"max_unconsolidated must be >= 0 or None, got {max_unconsolidated}")
    if max_age_days is not None and not max_age_days >= 0:  # also refuses NaN
        raise UserError(f"max_age_days must be >= 0 or None, got {max_age_days}")


def age_cutoff(max_age_days: float | None, now: datetime | None = None) -> float:
    """The timestamp before which an episode is too old (-inf without an age limit); "older" is strictly before."""
    if max_age_days is None:
        return -math.inf
    now_ts = timestamp(now) if now is not None else datetime.now(UTC).timestamp()
    return now_ts - max_age_days * _SECONDS_PER_DAY


def awaits_consolidation(summary: EpisodeSummary) -> bool:
    """Whether a consolidation may still learn from this episode, so capacity must keep it: an unconsolidated success
    (the tool-habit recipe's material), or an instance's unconsolidated turn that did not fail (what its user said:
    the facts recipe's material, which has no checker to call it a success)."""
    if summary.consolidated:
        return False
    return summary.status == "success" or (summary.status == "unknown" and summary.instance is not None)


def plan_evictions(
    catalog: Iterable[EpisodeSummary],
    max_unconsolidated: int | None,
    max_age_days: float | None,
    *,
    now: datetime | None = None,
) -> list[str]:
    """The ids `enforce_capacity` drops, in the order it drops them. Pure: backends share it.

    1. Consolidated episodes older than `max_age_days` (they are already in the weights: first to go).
    2. Unconsolidated failures, and unknowns recorded without an instance, older than `max_age_days`.
    3. While more than `max_unconsolidated` episodes are unconsolidated, the oldest of those.

    An episode that `awaits_consolidation` is never planned: when those alone exceed the cap, the buffer stays over it
    until a consolidation marks them (or someone discards them). Consolidated episodes do not count against the cap;
    with `max_age_days=None` they stay until discarded. Within each step the oldest (`started_at`, then id) go first.
    """
    check_capacity(max_unconsolidated, max_age_days)
    oldest_first = list(reversed(newest_first(catalog)))
    cutoff = age_cutoff(max_age_days, now)

    def droppable(s: EpisodeSummary) -> bool:
        return not awaits_consolidation(s)

    plan = [s.id for s in oldest_first if s.consolidated and s.created_at < cutoff]
    plan += [s.id for s in oldest_first if not s.consolidated and droppable(s) and s.created_at < cutoff]
    if max_unconsolidated is not None:
        planned = set(plan)
        remaining = [s for s in oldest_first if not s.consolidated and s.id not in planned]
        excess = len(remaining) - max_unconsolidated
        plan += [s.id for s in remaining if droppable(s)][: max(0, excess)]
    return plan


def check_consolidated_into(into: str) -> None:
    if not isinstance(into, str) or not _CONSOLIDATED_INTO.match(into):
        raise UserError(f"consolidated_into must look like 'skill@revision' (e.g. 'tool-habit@3'), got {into!r}")


def check_trajectory(trajectory: Trajectory) -> None:
    """What a backend refuses at `add`, the same way everywhere."""
    if not isinstance(trajectory, Trajectory):
        raise UserError(f"the buffer stores Trajectory objects, got {type(trajectory).__name__}")
    if not trajectory.id:
        raise UserError("a trajectory needs a non-empty id")
    if trajectory.instance == "":
        raise UserError("instance must be a non-empty string or None (None: recorded without an instance)")
    if trajectory.consolidated_into is not None:
        check_consolidated_into(trajectory.consolidated_into)


def check_ids(ids: Iterable[str]) -> list[str]:
    if isinstance(ids, str):
        raise UserError("pass a list of ids, not one id string")
    return list(dict.fromkeys(ids))


def check_k(k: int) -> None:
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise UserError(f"limit must be >= 0 or None, got {limit}")


# Inside the classes, `list` is the method: annotations spell the type `builtins.list`.
class EpisodeBuffer(ABC):
    """Short-term memory of finished runs. Backends implement the abstract methods; the rest is shared."""

    @abstractmethod
    def add_many(self, trajectories: Sequence[Trajectory]) -> None:
        """Store (or replace, by id) several episodes at once; a batch embeds in one call."""

    def add(self, trajectory: Trajectory) -> None:
        """Store an episode; an episode with the same id is replaced (e.g. after the user's feedback)."""
        self.add_many([trajectory])

    @abstractmethod
    def get(self, id: str) -> Trajectory:
        """The episode with that id. Raises `EpisodeNotFoundError` (a `UserError`) when there is none."""

    @abstractmethod
    def list(
        self,
        *,
        status: OutcomeStatus | None = None,
        skill: str | None = None,
        consolidated: bool | None = None,
        instance: InstanceFilter = ALL_INSTANCES,
        limit: int | None = None,
    ) -> builtins.list[Trajectory]:
        """Episodes matching every given filter, newest first, at most `limit`.

        `skill`: episodes during which that skill was active. `instance`: see the module docstring.
        """

    @abstractmethod
    def search(
        self,
        text: str,
        *,
        k: int = 3,
        status: OutcomeStatus | None = "success",
        consolidated: bool | None = False,
        skill: str | None = None,
        instance: InstanceFilter = ALL_INSTANCES,
    ) -> builtins.list[tuple[Trajectory, float]]:
        """The `k` episodes whose task is most similar to `text`, most similar first, with a score in [0, 1].

        The defaults recall what the agent wants in its context: successes not yet in the weights.
        Pass `status=None` / `consolidated=None` to search every episode.
        """

    @abstractmethod
    def mark_consolidated(self, ids: Sequence[str], into: str) -> None:
        """Record that these episodes were learned into `into` ("skill@revision").

        All ids must exist, or nothing changes (`EpisodeNotFoundError`)."""

    @abstractmethod
    def discard(self, ids: Sequence[str]) -> builtins.list[str]:
        """Delete these episodes, whatever their state; returns the ids that were there (unknown ids are skipped)."""

    @abstractmethod
    def catalog(self, *, instance: InstanceFilter = ALL_INSTANCES) -> builtins.list[EpisodeSummary]:
        """A summary of every episode (in no particular order): what stats and capacity work on."""

    def stats(self, *, instance: InstanceFilter = ALL_INSTANCES) -> BufferStats:
        """Counts over every episode (or one instance's)."""
        catalog = self.catalog(instance=instance)
        by_status = {status: 0 for status in STATUSES}
        for s in catalog:
            by_status[s.status] += 1
        times = [s.created_at for s in catalog]
        consolidated = sum(s.consolidated for s in catalog)
        return BufferStats(
            total=len(catalog),
            by_status=by_status,
            unconsolidated=len(catalog) - consolidated,
            consolidated=consolidated,
            unconsolidated_successes=sum(not s.consolidated and s.status == "success" for s in catalog),
            oldest=datetime.fromtimestamp(min(times), UTC) if times else None,
            newest=datetime.fromtimestamp(max(times), UTC) if times else None,
        )

    def enforce_capacity(
        self, max_unconsolidated: int | None, max_age_days: float | None, *, now: datetime | None = None
    ) -> builtins.list[str]:
        """Drop what `plan_evictions` plans (over the whole buffer) and return those ids, in drop order.

        The agent calls it after recording, with `Settings.buffer_max_unconsolidated` and
        `Settings.buffer_max_age_days`; None turns a limit off. `now` exists for tests.
        """
        plan = plan_evictions(self.catalog(), max_unconsolidated, max_age_days, now=now)
        if plan:
            self.discard(plan)
        return plan

    def close(self) -> None:  # noqa: B027 (optional hook: backends without resources have nothing to close)
        """Release connections and files. The buffer must not be used afterwards. Idempotent."""

    def __enter__(self) -> EpisodeBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InMemoryBuffer(EpisodeBuffer):
    """The reference backend: a dict of episodes and their task vectors, exact cosine search. Thread-safe."""

    def __init__(self, embedder: TextEmbedder) -> None:
        self.embedder = embedder
        self._episodes: dict[str, tuple[Trajectory, EpisodeSummary, np.ndarray]] = {}
        self._lock = threading.RLock()

    def add_many(self, trajectories: Sequence[Trajectory]) -> None:
        for trajectory in trajectories:
            check_trajectory(trajectory)
        latest = {t.id: t for t in trajectories}  # the same id twice in one batch: the last one wins
        if not latest:
            return
        vectors = self.embedder.embed([t.task for t in latest.values()])
        with self._lock:
            for trajectory, vector in zip(latest.values(), vectors, strict=True):
                stored = trajectory.model_copy(deep=True)  # the caller may keep mutating its object
                self._episodes[stored.id] = (stored, EpisodeSummary.of(stored), np.asarray(vector, dtype=np.float64))

    def get(self, id: str) -> Trajectory:
        with self._lock:
            if id not in self._episodes:
                raise EpisodeNotFoundError(f"no episode {id!r} in the buffer")
            return self._episodes[id][0].model_copy(deep=True)

    def list(
        self,
        *,
        status: OutcomeStatus | None = None,
        skill: str | None = None,
        consolidated: bool | None = None,
        instance: InstanceFilter = ALL_INSTANCES,
        limit: int | None = None,
    ) -> builtins.list[Trajectory]:
        check_limit(limit)
        with self._lock:
            hits = [
                s
                for _, s, _ in self._episodes.values()
                if s.matches(status=status, skill=skill, consolidated=consolidated, instance=instance)
            ]
            ordered = newest_first(hits)[:limit]
            return [self._episodes[s.id][0].model_copy(deep=True) for s in ordered]

    def search(
        self,
        text: str,
        *,
        k: int = 3,
        status: OutcomeStatus | None = "success",
        consolidated: bool | None = False,
        skill: str | None = None,
        instance: InstanceFilter = ALL_INSTANCES,
    ) -> builtins.list[tuple[Trajectory, float]]:
        check_k(k)
        query = np.asarray(self.embedder.embed([text])[0], dtype=np.float64)
        with self._lock:
            hits = [
                (float(vector @ query), s)
                for _, s, vector in self._episodes.values()
                if s.matches(status=status, skill=skill, consolidated=consolidated, instance=instance)
            ]
            # Most similar first; equal scores: newest first, like every listing.
            hits.sort(key=lambda hit: (hit[0], hit[1].created_at, hit[1].id), reverse=True)
            return [(self._episodes[s.id][0].model_copy(deep=True), similarity_score(c)) for c, s in hits[:k]]

    def mark_consolidated(self, ids: Sequence[str], into: str) -> None:
        check_consolidated_into(into)
        wanted = check_ids(ids)
        with self._lock:
            missing = [i for i in wanted if i not in self._episodes]
            if missing:
                raise EpisodeNotFoundError(f"no episodes {missing!r} in the buffer; nothing was marked")
            for i in wanted:
                trajectory, _, vector = self._episodes[i]
                updated = trajectory.model_copy(update={"consolidated_into": into})
                self._episodes[i] = (updated, EpisodeSummary.of(updated), vector)

    def discard(self, ids: Sequence[str]) -> builtins.list[str]:
        wanted = check_ids(ids)
        with self._lock:
            return [i for i in wanted if self._episodes.pop(i, None) is not None]

    def catalog(self, *, instance: InstanceFilter = ALL_INSTANCES) -> builtins.list[EpisodeSummary]:
        with self._lock:
            return [s for _, s, _ in self._episodes.values() if s.matches(instance=instance)]

    def __len__(self) -> int:
        return len(self._episodes)

    def __repr__(self) -> str:
        return f"InMemoryBuffer({len(self._episodes)} episodes, embedder={self.embedder!r})"
