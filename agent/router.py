"""The router: which skills a task needs, when the caller names none. The agent's decision, so it lives in `agent`.

Each skill is scored by the cosine similarity between the task's embedding and two vectors of its current revision:

- its description (or its name, when it has none), embedded once and cached;
- the centroid of the prompts the revision was trained on (`RevisionRecord.routing`, stored by consolidation).

The score is the **max** of the two, not the mean. Descriptions and centroids are evidence of different quality from
skill to skill: a hand-written pack has a precise description and maybe no training prompts; a consolidated skill has
a generic description ("Learned from 12 successful episodes, such as ...") and a sharp centroid. With the max, either
strong piece of evidence suffices and a skill without a centroid is scored on the same scale as one with it (a mean
would have to treat a missing centroid as 0, halving the score, or switch formulas per skill). The price: a skill
with two vectors gets two chances, a small upward bias that the threshold absorbs.

Then: the `top_k` best skills scoring at least `threshold` are chosen, plus every pinned skill whatever its score.
Each choice carries its score, the threshold and why ("pinned" or "similar"), and the agent records them in the
trajectory.

Only usable skills are indexed: a skill whose manifest or current revision cannot be read or whose current revision's
files are missing (`SkillStore.scan`), or that was made for another base than the store's, is never routed to (a run
with it would fail); each such skill is logged once, and listed in `RouteDecision.skipped`.

`RoutingIndex` keeps every skill's two vectors in one matrix, keyed by (skill, revision, description) so only new
or changed skills are embedded or read again; it is rebuilt when the store's generation counter (bumped by every
write) or its folder's mtime changes. Routing is then one `embed` call for the task and one matrix-vector product.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from memory.embed import TextEmbedder
from memory.trajectory import SkillUse
from skills.errors import CorruptSkillError, SkillNotFoundError, UserError
from skills.manifest import RevisionRecord, RoutingVector
from skills.reader import SkillCatalog

log = logging.getLogger("habitloop.router")
DEFAULT_TOP_K = 2
# Calibrated on all-MiniLM-L6-v2 (README "Routing"): tasks scored 0.44-0.69 against a centroid of similar prompts and
# 0.26-0.65 against a description of their job; unrelated tasks scored -0.09 to 0.25 (a translation request against
# a file-writing skill's centroid: 0.25). Terse descriptions without a centroid can fall below 0.3: name the tasks.
DEFAULT_THRESHOLD = 0.3
DEFAULT_FLOOR = 0.1  # candidates listed by `decide` (and the CLI) score at least this

RouteReason = Literal["pinned", "similar"]


class RouteCandidate(BaseModel):
    """One skill's score for a task, and its parts."""

    name: str
    revision: int
    score: float = Field(description="max(description_score, centroid_score)")
    description_score: float
    centroid_score: float | None = Field(None, description="None when the revision has no usable centroid")
    chosen: bool = False


class RouteChoice(BaseModel):
    """A skill the router chose, and why."""

    name: str
    revision: int
    score: float
    threshold: float
    reason: RouteReason
    description_score: float
    centroid_score: float | None = None

    def skill_use(self) -> SkillUse:
        """The trajectory's record of this choice."""
        return SkillUse(
            name=self.name, revision=self.revision, reason=self.reason, score=self.score, threshold=self.threshold
        )


class RouteDecision(BaseModel):
    """Everything one routing decided and measured: what `habitloop route --json` prints."""

    task: str
    embedder: str
    top_k: int
    threshold: float
    pinned: list[str]
    choices: list[RouteChoice]
    candidates: list[RouteCandidate] = Field(description="best first, those scoring at least `floor` (capped)")
    floor: float
    skills_indexed: int
    skipped: dict[str, str] = Field(
        default_factory=dict, description="skills never routed to, and why (unreadable, another base)"
    )
    embed_ms: float = Field(description="embedding the task (0 when nothing was indexed)")
    score_ms: float = Field(description="refresh check + matrix-vector product + top-k")


@dataclass(frozen=True)
class _Vectors:
    description: np.ndarray  # (dim,) float32, unit length
    centroid: np.ndarray | None  # (dim,) float32, unit length


class RoutingIndex:
    """Every skill's description and centroid vectors, as one matrix, kept in step with the store.

    Build it from a store (`RoutingIndex(store, embedder)`) or, for benchmarks and tests, from vectors
    (`RoutingIndex.from_vectors`). `refresh()` is cheap when nothing changed: one small file read and one stat.
    """

    def __init__(self, store: SkillCatalog | None, embedder: TextEmbedder) -> None:
        self.store = store
        self.embedder = embedder
        self.names: list[str] = []
        self.revisions: list[int] = []
        self.builds = 0  # how many times the matrix was (re)built: tests check invalidation with it
        self.skipped: dict[str, str] = {}  # skill folder -> why it is not routed to
        self._warned: set[tuple[str, str]] = set()
        self._has_centroid = np.zeros(0, dtype=bool)
        self._matrix = np.zeros((0, 0), dtype=np.float32)  # (2 * skills, dim): descriptions, then centroids
        self._cache: dict[tuple[str, int, str], _Vectors] = {}
        self._token: tuple[int, int] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_vectors(
        cls,
        embedder: TextEmbedder,
        names: Sequence[str],
        revisions: Sequence[int],
        descriptions: Any,
        centroids: Sequence[Any | None] | None = None,
    ) -> RoutingIndex:
        """An index over given vectors, with no store behind it (never refreshed): `descriptions` is (n, dim),
        `centroids` n vectors or None. Vectors are normalized here."""
        index = cls(None, embedder)
        described = _unit_rows(np.asarray(descriptions, dtype=np.float32))
        entries = []
        for row, vector in enumerate(described):
            centroid = None if centroids is None or centroids[row] is None else centroids[row]
            entries.append(
                _Vectors(vector, None if centroid is None else _unit_rows(np.asarray(centroid, np.float32)[None])[0])
            )
        index._install(list(names), list(revisions), entries)
        return index

    def __len__(self) -> int:
        return len(self.names)

    def refresh(self) -> bool:
        """Rebuild the matrix if the store changed since the last build; True when it did."""
        if self.store is None:
            return False
        token = self._change_token()
        if token == self._token:
            return False
        with self._lock:
            if token == self._token:
                return False
            self._rebuild(token)
            return True

    def scores(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(combined, description, centroid) scores of every indexed skill for a unit `query` vector (dim,).
        The centroid score of a skill without a centroid is NaN."""
        both = self._matrix @ query  # (2 * skills,)
        described, centred = both[: len(self)], both[len(self) :]
        combined = np.maximum(described, centred)  # a missing centroid row repeats the description row: max = it
        return combined, described, np.where(self._has_centroid, centred, np.nan)

    # --------------------------------------------------------------------------------------------- internals

    def _change_token(self) -> tuple[int, int]:
        assert self.store is not None
        # The generation counter sees every write made through a SkillStore, in any process; the folder's mtime also
        # sees skill folders added or removed by hand.
        return self.store.generation(), self.store.root.stat().st_mtime_ns

    def _rebuild(self, token: tuple[int, int]) -> None:
        assert self.store is not None
        scan = self.store.scan()
        self.skipped = {problem.name: problem.error for problem in scan.problems}
        manifests = []
        loaded = self.store.base_fingerprint
        for manifest in scan.skills:  # a skill of another base cannot run on this one
            if loaded and manifest.base_fingerprint != loaded:
                self.skipped[manifest.name] = (
                    f"skill {manifest.name!r} was trained on base {manifest.base_fingerprint}, not the loaded {loaded}"
                )
            else:
                manifests.append(manifest)
        keys = [(m.name, m.current, m.description or m.name.replace("-", " ").replace("_", " ")) for m in manifests]
        # New or changed skills only: their current record (immutable, so read once) gives the centroid; one that
        # cannot be read is not routed to. `scan` checked only that the files exist, to stay cheap at 10,000 skills.
        records: dict[tuple[str, int, str], RevisionRecord] = {}
        for key in keys:
            if key not in self._cache:
                try:
                    records[key] = self.store.revision(key[0], key[1])
                except (CorruptSkillError, SkillNotFoundError) as unreadable:
                    self.skipped[key[0]] = str(unreadable)
        keys = [key for key in keys if key[0] not in self.skipped]
        for name, error in self.skipped.items():
            if (name, error) not in self._warned:  # once per skill and problem, not at every rebuild
                self._warned.add((name, error))
                log.warning("not routing to skill %r: %s", name, error)
        missing = [key for key in keys if key not in self._cache]
        if missing:
            vectors = _unit_rows(np.asarray(self.embedder.embed([text for _, _, text in missing]), dtype=np.float32))
            for key, vector in zip(missing, vectors, strict=True):
                self._cache[key] = _Vectors(vector, self._centroid(records[key].routing, vector.shape[0]))
        live = set(keys)
        self._cache = {key: value for key, value in self._cache.items() if key in live}
        self._install([k[0] for k in keys], [k[1] for k in keys], [self._cache[k] for k in keys])
        self._token = token

    def _centroid(self, routing: RoutingVector | None, dim: int) -> np.ndarray | None:
        if routing is None or routing.embedder != self.embedder.name or len(routing.vector) != dim:
            return None  # none stored, or made by another embedder: not comparable with this one's vectors
        return _unit_rows(np.asarray(routing.vector, dtype=np.float32)[None])[0]

    def _install(self, names: list[str], revisions: list[int], entries: list[_Vectors]) -> None:
        if entries:
            descriptions = np.stack([e.description for e in entries])  # (skills, dim)
            centroids = np.stack([e.description if e.centroid is None else e.centroid for e in entries])
            matrix = np.ascontiguousarray(np.concatenate([descriptions, centroids]))  # (2 * skills, dim)
        else:
            matrix = np.zeros((0, 0), dtype=np.float32)
        self._has_centroid = np.array([e.centroid is not None for e in entries], dtype=bool)
        self._matrix = matrix
        self.names, self.revisions = names, revisions
        self.builds += 1


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)


class Router:
    """Chooses skills for a task: the `top_k` most similar at or above `threshold`, plus the `pinned` ones.

    `store` and `embedder` are passed in (the agent shares its buffer's embedder, so the task is embedded by the model
    that made the stored centroids); `index` replaces the store-backed index (benchmarks build one from vectors).
    """

    def __init__(
        self,
        store: SkillCatalog | None,
        embedder: TextEmbedder,
        *,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
        pinned: Sequence[str] = (),
        floor: float = DEFAULT_FLOOR,
        max_candidates: int = 20,
        index: RoutingIndex | None = None,
    ) -> None:
        if store is None and index is None:
            raise UserError("a Router needs a skill store or a RoutingIndex")
        _check_options(top_k, threshold)
        self.store = store
        self.embedder = embedder
        self.top_k = top_k
        self.threshold = threshold
        self.pinned = list(dict.fromkeys(pinned))
        self.floor = floor
        self.max_candidates = max_candidates
        self.index = index if index is not None else RoutingIndex(store, embedder)

    def __repr__(self) -> str:
        return f"Router(top_k={self.top_k}, threshold={self.threshold}, pinned={self.pinned}, {len(self.index)} skills)"

    def route(self, task: str) -> list[RouteChoice]:
        """The chosen skills, pinned first, then by score."""
        return self.decide(task).choices

    def skill_uses(self, task: str) -> list[SkillUse]:
        """The chosen skills as the trajectory records them (what the agent's `select_skills` node calls)."""
        return [choice.skill_use() for choice in self.route(task)]

    def decide(
        self,
        task: str,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        pinned: Sequence[str] | None = None,
        floor: float | None = None,
    ) -> RouteDecision:
        """Route `task` and explain it: the choices and the best-scoring candidates. Options override the router's."""
        if not isinstance(task, str) or not task.strip():
            raise UserError("the task is empty", hint="pass the task as a non-empty string")
        top_k = self.top_k if top_k is None else top_k
        threshold = self.threshold if threshold is None else threshold
        floor = self.floor if floor is None else floor
        pins = self.pinned if pinned is None else list(dict.fromkeys(pinned))
        _check_options(top_k, threshold)

        started = time.perf_counter()
        self.index.refresh()
        index = self.index
        position = {name: row for row, name in enumerate(index.names)}
        for name in pins:
            if name in index.skipped:
                raise SkillNotFoundError(f"pinned skill {name!r} cannot be used: {index.skipped[name]}")
            if name not in position:
                raise SkillNotFoundError(
                    f"pinned skill {name!r} is not in the store", hint="see `habitloop skills list`"
                )
        embed_ms = 0.0
        choices: list[RouteChoice] = []
        candidates: list[RouteCandidate] = []
        if len(index):
            checked = time.perf_counter()
            query = np.asarray(self.embedder.embed([task])[0], dtype=np.float32)  # the one embed call per task
            embedded = time.perf_counter()
            embed_ms = (embedded - checked) * 1000
            combined, described, centred = index.scores(query)
            pinned_rows = [position[name] for name in pins]
            eligible = np.flatnonzero(combined >= threshold)
            eligible = eligible[~np.isin(eligible, pinned_rows)]
            best = _top(eligible, combined, top_k)
            shown = _top(np.flatnonzero(combined >= floor), combined, self.max_candidates)

            def choice(row: int, reason: RouteReason) -> RouteChoice:
                return RouteChoice(
                    name=index.names[row],
                    revision=index.revisions[row],
                    score=_round(combined[row]),
                    threshold=threshold,
                    reason=reason,
                    description_score=_round(described[row]),
                    centroid_score=None if np.isnan(centred[row]) else _round(centred[row]),
                )

            choices = [choice(row, "pinned") for row in pinned_rows] + [choice(row, "similar") for row in best]
            chosen = {c.name for c in choices}
            candidates = [
                RouteCandidate(chosen=index.names[row] in chosen, **choice(row, "similar").model_dump(include=_PARTS))
                for row in shown
            ]
            started += embedded - checked  # score_ms excludes the embedding
        return RouteDecision(
            task=task,
            embedder=self.embedder.name,
            top_k=top_k,
            threshold=threshold,
            pinned=pins,
            choices=choices,
            candidates=candidates,
            floor=floor,
            skills_indexed=len(index),
            skipped=dict(index.skipped),
            embed_ms=round(embed_ms, 3),
            score_ms=round((time.perf_counter() - started) * 1000, 3),
        )


_PARTS = {"name", "revision", "score", "description_score", "centroid_score"}


def _round(value: Any) -> float:
    return round(float(value), 4)


def _top(rows: np.ndarray, scores: np.ndarray, k: int) -> list[int]:
    """The `k` rows of `rows` with the highest scores, best first (ties broken by row, i.e. by name)."""
    if k <= 0 or rows.size == 0:
        return []
    if rows.size > k:  # O(n) selection first: with 10,000 skills a full sort would dominate
        rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
    return sorted((int(r) for r in rows), key=lambda r: (-float(scores[r]), r))


def _check_options(top_k: int, threshold: float) -> None:
    if top_k < 0:
        raise UserError(f"top_k must be 0 or more, got {top_k}")
    if not -1.0 <= threshold <= 1.0:
        raise UserError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
