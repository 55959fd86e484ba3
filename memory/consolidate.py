"""Consolidation: successful episodes in the buffer become a new revision of a skill adapter.

    select -> dataset (+ self-distillation replay) -> train (continuing from the current revision) -> evaluate the
    candidate against the current revision -> commit (promoted or rejected) -> mark the episodes consolidated -> report

Crash safety comes from the order of the writes and from one reconciling step at the start of every run:
- the store commits a revision atomically (folder rename, then manifest rename); the buffer is only touched after;
- a revision's provenance lists the episode ids it was trained on, so a run that died after the commit but before
  the buffer was updated is finished by the next run (`reconcile`), which marks those episodes then;
- a rerun on the same data finds the revision already tried (same data hash, same parent) and does not train again.
So a kill at any moment loses no episode and never marks one consolidated into a revision that was not committed.

One skill is consolidated by one process at a time: a per-skill file lock (`<store>/.locks/<skill>.lock`, not the
store's own lock, which is held only for the short commit) is held from choosing the episodes and reading the parent
to the commit and the marking. A second consolidation of that skill waits `lock_timeout` seconds (default 0) and
then skips it with a report saying so (`skipped`); it never trains from a parent another process is replacing. A new
skill's lock is its derived name, taken before training, so two processes deriving the same name cannot both train.
Under the lock the episodes are chosen again, so what the other process consolidated meanwhile is not trained twice.

The candidate adapter is trained into `<store>/.candidates/<skill>/`, guarded by the same lock. A crashed run's
folder is stale as soon as its lock is free: the next run removes it, after writing the report of a revision that
was committed before the crash (the report's draft is saved there just before the commit).

A skill that cannot be read (any `CorruptSkillError`) or was made for another base is skipped with a warning, and
its problems never stop the other skills; only a skill named explicitly (`run(skill=...)`) raises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import resource
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pydantic import BaseModel, Field, ValidationError

from memory.buffer import EpisodeBuffer
from memory.embed import TextEmbedder, routing_vector
from memory.offtask import OFF_TASK_EVAL, OFF_TASK_TRAIN
from memory.trajectory import Trajectory
from skills.errors import BaseMismatchError, CorruptSkillError, SkillNotFoundError
from skills.generation import generate
from skills.manifest import Evaluation, LoraSpec, RoutingVector, validate_skill_name
from skills.residency import Residency
from skills.store import SkillStore
from skills.train import ChatExample, ChatMessage, TrainConfig, data_hash, train_lora

log = logging.getLogger("habitloop.consolidate")
LOCKS = ".locks"  # under the store's root: one lock file per skill being consolidated
CANDIDATES = ".candidates"  # under the store's root: one folder per skill being consolidated, held by its lock
_DRAFT = "report-draft.json"  # in a candidate folder: the report of the revision about to be committed
# Errors that make a skill unusable as a consolidation target: skipped (with a warning) unless named explicitly.
_BROKEN = (CorruptSkillError, BaseMismatchError)

# The off-task check reads only whether a reply starts calling a tool, so it stops early (24 prompts x 3 models).
OFFTASK_TOKENS = 32
_STOP = set(
    "a an the of to in on for and or is are was be what how who which with by at from it this that please "
    "use tool me my you your can could would i do does".split()
)


class ConsolidationConfig(BaseModel):
    """The recipe; stored in the report and (its training part) in the revision's provenance."""

    min_episodes: int = Field(4, ge=1, description="successful unconsolidated episodes needed to start")
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of episodes kept out for evaluation")
    replay: int = Field(12, ge=0, description="at least this many off-task prompts answered by the base, trained on")
    replay_share: float = Field(
        0.2, ge=0.0, le=1.0, description="and at least this share of the trained episodes (up to the prompt pool's 64)"
    )
    regression_size: int = Field(8, ge=0, description="episodes of earlier revisions re-checked (kept small)")
    margin: float = Field(0.05, ge=0.0, description="how much worse than the current revision a candidate may be")
    epochs: float = Field(3.0, gt=0, description="passes over the training data (sets the number of steps)")
    min_steps: int = Field(8, ge=1)
    max_steps: int = Field(96, ge=1)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    max_new_tokens: int = Field(48, ge=1, description="tokens generated per evaluation prompt")
    seed: int = 0
    kind: str = Field("memory", description="kind of a skill created by consolidation")
    lora: LoraSpec = Field(
        default_factory=LoraSpec, description="adapter shape of a new skill; a new revision keeps its parent's shape"
    )
    gradient_checkpointing: bool = Field(
        True, description="trade compute for memory while training (see TrainConfig); off is ~1.3x faster"
    )


class Scores(BaseModel):
    """One model's evaluation: first-turn agreement on held-out and regression episodes; off-task behaviour."""

    heldout_match: float | None = None
    regression_match: float | None = None
    offtask_call_rate: float = 0.0
    offtask_agreement: float = 1.0


class ConsolidationReport(BaseModel):
    """What one consolidation did, measured; also written to `<reports>/consolidation-<skill>-<rev>.json`."""

    skill: str
    created: bool
    revision: int | None
    parent: int | None
    promoted: bool
    reason: str
    episodes: list[str]
    n_train: int
    n_holdout: int
    n_replay: int
    candidate: Scores
    current: Scores
    losses: list[float] = Field(default_factory=list)
    train_seconds: float = 0.0
    train_tokens_per_second: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    report_path: str | None = None
    plot_path: str | None = None
    skipped: bool = Field(False, description="nothing was trained: `reason` says why (another process, a broken skill)")


class _Draft(BaseModel):
    """What a candidate folder keeps just before its commit, so a run that dies after it can still write the report."""

    report: ConsolidationReport
    data_hash: str


def crash_point(name: str) -> None:
    """Die here, as kill -9 would, when HABITLOOP_CRASH_AT names this point: the crash-safety tests use it."""
    if os.environ.get("HABITLOOP_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------------------------- helpers


def _norm(text: str) -> str:
    return " ".join(text.split())


def _is_call(text: str) -> bool:
    return "<tool_call>" in text or bool(re.match(r"^\s*\{\s*\"name\"", text))


def _first_reply(episode: Trajectory) -> str | None:
    for message in episode.run_messages:
        if message.get("role") == "assistant":
            return str(message.get("content", ""))
    return None


def _prompt(episode: Trajectory) -> list[dict[str, str]]:
    head = [{"role": "system", "content": episode.system_prompt}] if episode.system_prompt else []
    return [*head, {"role": "user", "content": episode.task}]


def example_from(episode: Trajectory) -> ChatExample:
    """The episode as a training conversation: its system prompt, then this run's messages (earlier runs dropped)."""
    messages = [ChatMessage(role="system", content=episode.system_prompt)] if episode.system_prompt else []
    for message in episode.run_messages:
        role = message.get("role")
        if role in ("user", "assistant", "tool", "system"):
            messages.append(ChatMessage(role=role, content=str(message.get("content", ""))))
    return ChatExample(messages=tuple(messages), source_id=episode.id)


def split_holdout(episodes: Sequence[Trajectory], fraction: float) -> tuple[list[Trajectory], list[Trajectory]]:
    """(train, held out): the `fraction` of episodes whose id hashes lowest, at least one when there are 3 or more.

    Deterministic, so a rerun on the same episodes holds out the same ones; by count rather than by a hash
    threshold, so a small group never ends up with no held-out episode by chance.
    """
    if len(episodes) < 3 or fraction <= 0:
        return list(episodes), list(episodes)  # too few to split: train and evaluate on all (the report says so)
    ranked = sorted(episodes, key=lambda e: hashlib.sha256(e.id.encode()).hexdigest())
    count = max(1, round(fraction * len(episodes)))
    held = {e.id for e in ranked[:count]}
    return [e for e in episodes if e.id not in held], [e for e in episodes if e.id in held]


def derive_name(episodes: Sequence[Trajectory], taken: set[str]) -> tuple[str, str]:
    """A slug and a description for a skill created from `episodes`, from the words their tasks share."""
    words = Counter(word for e in episodes for word in set(re.findall(r"[a-z]+", e.task.lower())) if word not in _STOP)
    top = [word for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0]))[:2]] or ["learned"]
    base = validate_skill_name("-".join(top)[:50].strip("-") or "learned")
    name, index = base, 2
    while name in taken:
        name, index = f"{base}-{index}", index + 1
    samples = "; ".join(repr(e.task[:60]) for e in episodes[:3])
    return name, f"Learned from {len(episodes)} successful episodes, such as {samples}."


def group_episodes(episodes: Sequence[Trajectory], skill: str | None) -> dict[str | None, list[Trajectory]]:
    """Episodes by the skill they should consolidate into: `skill` if given (its own episodes and skill-less ones),
    else the first skill each ran with; None collects episodes that ran with no skill (a new skill is made)."""
    groups: dict[str | None, list[Trajectory]] = {}
    for episode in episodes:
        used = episode.skills[0].name if episode.skills else None
        if skill is not None:
            if used in (skill, None):
                groups.setdefault(skill, []).append(episode)
        else:
            groups.setdefault(used, []).append(episode)
    return groups


def replay_count(config: ConsolidationConfig, n_train: int) -> int:
    """Replay answers to train on: `replay`, or `replay_share` of the trained episodes if that is more, at most the
    pool. A fixed count fades as demonstrations grow (12 is 4 % of 280), and with it the habit's restraint."""
    return min(len(OFF_TASK_TRAIN), max(config.replay, math.ceil(config.replay_share * n_train)))


def off_task_chats(questions: Sequence[str], systems: Sequence[str | None]) -> list[list[dict[str, str]]]:
    """Each question under one of the episodes' system prompts in turn (most used first): when every episode
    brings its own tools (BFCL cases do), the skill learns and is checked to leave unrelated questions alone under
    many tool lists, not under one."""
    chats = []
    for i, question in enumerate(questions):
        system = systems[i % len(systems)] if systems else None
        chats.append(
            ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        )
    return chats


# ------------------------------------------------------------------------------------------------------- the run


class Consolidator:
    """Consolidates buffer episodes into skills. Resources are passed in: the buffer, the store, the residency
    holding the shared base (training and evaluation run on `residency.model`) and the tokenizer.

    `embedder` (default: the buffer's own, when it has one) embeds the trained tasks into the centroid stored with
    each new revision (`RevisionRecord.routing`), which the router compares tasks with; None stores no centroid.
    """

    def __init__(
        self,
        buffer: EpisodeBuffer,
        store: SkillStore,
        residency: Residency,
        tokenizer: Any,
        *,
        config: ConsolidationConfig | None = None,
        reports_dir: Path | None = None,
        instance: str | None = None,
        progress: bool = True,
        embedder: TextEmbedder | None = None,
        lock_timeout: float = 0.0,
    ) -> None:
        self.buffer = buffer
        self.embedder: TextEmbedder | None = embedder if embedder is not None else getattr(buffer, "embedder", None)
        self.store = store
        self.residency = residency
        self.tokenizer = tokenizer
        self.config = config or ConsolidationConfig()
        self.reports_dir = reports_dir
        self.instance = instance
        self.progress = progress
        self.lock_timeout = lock_timeout
        # One lock object per skill: filelock counts re-entries per object, so `run` and `consolidate` nest.
        self._locks: dict[str, FileLock] = {}

    def reconcile(self) -> list[str]:
        """Finish what crashed runs left: remove their candidate folders (writing the report of a revision committed
        before the crash), and mark episodes of promoted revisions that the buffer still holds as unconsolidated.
        A revision that cannot be read is skipped with a warning. Returns the ids marked."""
        self._sweep_candidates()
        pending = {e.id for e in self.buffer.list(consolidated=False, instance=self.instance)}
        marked: list[str] = []
        if not pending:
            return marked
        for manifest in self.store.list():
            for number in manifest.revision_numbers():
                if manifest.status_of(number) != "promoted":
                    continue
                try:
                    record = self.store.revision(manifest.name, number)
                except (CorruptSkillError, SkillNotFoundError) as error:
                    log.warning("reconcile skips %s@%s: %s", manifest.name, number, error)
                    continue
                ids = [i for i in record.provenance.episode_ids if i in pending]
                if ids:
                    self.buffer.mark_consolidated(ids, into=f"{manifest.name}@{number}")
                    pending.difference_update(ids)
                    marked += ids
        return marked

    def run(self, skill: str | None = None) -> list[ConsolidationReport]:
        """Consolidate every group of enough new successes (or only those for `skill`).

        Each group is consolidated under its skill's lock, its episodes chosen again once the lock is held. A skill
        another process is consolidating, or (unless it is `skill`) one that is broken, gets a `skipped` report."""
        if skill is not None:
            validate_skill_name(skill)
        self.reconcile()
        reports = []
        for target, group in self._groups(skill).items():
            if len(group) < self.config.min_episodes:
                continue
            try:
                report = self._consolidate_group(target, skill)
            except _BROKEN as error:
                if skill is not None:
                    raise
                report = self._skipped(target or "(new skill)", f"skill {target!r} cannot be consolidated: {error}")
            if report is not None:
                reports.append(report)
        return reports

    def consolidate(self, target: str | None, episodes: Sequence[Trajectory]) -> ConsolidationReport:
        """One skill: dataset, training, evaluation, commit, marking, report; under the skill's lock (a `skipped`
        report when another process holds it). `target` None creates a skill named after the episodes' tasks."""
        if target is None:
            target = derive_name(episodes, self._taken())[0]
        with self._claim(target) as work:
            if work is None:
                return self._busy(target)
            return self._consolidate(target, episodes, work)

    def _consolidate_group(self, target: str | None, skill: str | None) -> ConsolidationReport | None:
        """Claim the group's skill, choose its episodes again under the claim, consolidate them. None: too few."""
        for _ in range(3):  # a new skill's name is taken by another process meanwhile: claim the next one
            group = self._groups(skill).get(target, [])
            if len(group) < self.config.min_episodes:
                return None
            name = target if target is not None else derive_name(group, self._taken())[0]
            with self._claim(name) as work:
                if work is None:
                    return self._busy(name)
                self.reconcile()  # a run that died between its commit and its marking: mark its episodes first
                group = self._groups(skill).get(target, [])
                if len(group) < self.config.min_episodes:
                    return None  # another process consolidated them while this one waited
                if target is None and derive_name(group, self._taken())[0] != name:
                    continue
                return self._consolidate(name, group, work)
        return self._skipped("(new skill)", "new skill names kept being taken by other processes; skipped")

    def _consolidate(self, target: str, episodes: Sequence[Trajectory], work: Path) -> ConsolidationReport:
        started = time.perf_counter()
        cfg = self.config
        self._check_target(target)
        created = not self.store.exists(target)
        description = derive_name(episodes, set())[1] if created else ""
        parent = None if created else self.store.get(target).current

        # 1. dataset: dedupe, split, replay
        unique: dict[str, Trajectory] = {}
        for episode in episodes:
            unique.setdefault(data_hash([example_from(episode)]), episode)
        chosen = list(unique.values())
        train_eps, holdout = split_holdout(chosen, cfg.holdout_fraction)
        systems = [prompt for prompt, _ in Counter(e.system_prompt for e in chosen).most_common()]
        replay_chats = off_task_chats(OFF_TASK_TRAIN[: replay_count(cfg, len(train_eps))], systems)
        offtask_chats = off_task_chats(OFF_TASK_EVAL, systems)
        with self.residency.base_only() as model:
            replay_answers = self._generate(model, replay_chats)
            base_offtask = self._generate(model, offtask_chats, OFFTASK_TOKENS)
        examples = [example_from(e) for e in train_eps] + [
            ChatExample(
                messages=(*(ChatMessage.model_validate(m) for m in chat), ChatMessage(role="assistant", content=a)),
                source_id=f"replay:{i}",
            )
            for i, (chat, a) in enumerate(zip(replay_chats, replay_answers, strict=True))
        ]
        digest = data_hash(examples)
        if not created:
            tried = self._already_tried(target, parent, digest)
            if tried is not None:
                return self._report_tried(target, tried, parent, chosen, started)

        # 2. train, continuing from the current revision
        steps = max(cfg.min_steps, min(cfg.max_steps, round(cfg.epochs * len(examples) / cfg.batch_size)))
        train_config = TrainConfig(
            lora=cfg.lora,
            steps=steps,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            seed=cfg.seed,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        regression = self._regression_set(target, exclude={e.id for e in chosen}) if not created else []
        # the candidate is trained into `work`, the claimed folder (swept by the next claim if this run dies)
        result = train_lora(
            self.residency.model,
            self.tokenizer,
            examples,
            work / "candidate",
            config=train_config,
            init_from=None if created else self.store.revision_dir(target),
            episode_ids=[e.id for e in train_eps],
            progress=self.progress,
            on_step=lambda step, loss: crash_point("training") if step >= 2 else None,
        )
        crash_point("saved")

        # 3. evaluate the candidate and what it would replace (the current revision, or the base)
        with self.residency.trial(result.adapter_dir) as model:
            candidate = self._score(model, holdout, regression, offtask_chats, base_offtask)
        if created:
            with self.residency.base_only() as model:
                current = self._score(model, holdout, regression, offtask_chats, base_offtask)
        else:
            self.residency.activate(target)
            current = self._score(self.residency.model, holdout, regression, offtask_chats, base_offtask)
        promoted, reason = self._gate(candidate, current)

        # 4. the report's draft (kept in `work` until the report is written), commit (atomic), then mark the episodes
        provenance = result.provenance.model_copy(
            update={"episode_ids": tuple(e.id for e in chosen), "data_hash": digest}
        )
        evaluation = Evaluation(
            metrics={f"candidate_{k}": v for k, v in candidate.model_dump().items() if v is not None}
            | {f"current_{k}": v for k, v in current.model_dump().items() if v is not None},
            details={"reason": reason, "holdout": [e.id for e in holdout], "config": cfg.model_dump()},
        )
        routing = self._routing(target, parent, train_eps)
        report = ConsolidationReport(
            skill=target,
            created=created and promoted,
            revision=None,
            parent=parent,
            promoted=promoted,
            reason=reason,
            episodes=[e.id for e in chosen],
            n_train=len(train_eps),
            n_holdout=len(holdout),
            n_replay=len(replay_chats),
            candidate=candidate,
            current=current,
            losses=result.losses,
            train_seconds=result.seconds,
            train_tokens_per_second=result.tokens_per_second,
        )
        (work / _DRAFT).write_text(_Draft(report=report, data_hash=digest).model_dump_json())
        revision: int | None = None  # a new skill that is no better than the base is not created at all
        if created and promoted:
            self.store.create(
                target,
                result.adapter_dir,
                kind=cfg.kind,
                description=description,
                provenance=provenance,
                evaluation=evaluation,
                routing=routing,
            )
            revision = 1
        elif not created:
            revision = self.store.add_revision(
                target,
                result.adapter_dir,
                provenance=provenance,
                evaluation=evaluation,
                promote=promoted,
                note=reason,
                routing=routing,
            ).number
        crash_point("committed")
        if promoted and revision is not None:
            self.buffer.mark_consolidated([e.id for e in chosen], into=f"{target}@{revision}")
        crash_point("marked")
        report = report.model_copy(
            update={
                "revision": revision,
                "wall_seconds": time.perf_counter() - started,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
        report = self._write_report(report)
        (work / _DRAFT).unlink()  # written: nothing left for a sweep to recover
        return report

    # --------------------------------------------------------------------------------------------- internals

    def _generate(self, model: Any, chats: list[list[dict[str, str]]], limit: int | None = None) -> list[str]:
        tokens = min(self.config.max_new_tokens, limit or self.config.max_new_tokens)
        return generate(model, self.tokenizer, chats, max_new_tokens=tokens) if chats else []

    def _match_rate(self, model: Any, episodes: Sequence[Trajectory]) -> float | None:
        scored = [(e, _first_reply(e)) for e in episodes]
        scored = [(e, r) for e, r in scored if r is not None]
        if not scored:
            return None
        replies = self._generate(model, [_prompt(e) for e, _ in scored])
        return sum(_norm(got) == _norm(want or "") for got, (_, want) in zip(replies, scored, strict=True)) / len(
            scored
        )

    def _score(
        self,
        model: Any,
        holdout: Sequence[Trajectory],
        regression: Sequence[Trajectory],
        offtask_chats: list[list[dict[str, str]]],
        base_offtask: list[str],
    ) -> Scores:
        off = self._generate(model, offtask_chats, OFFTASK_TOKENS)
        return Scores(
            heldout_match=self._match_rate(model, holdout),
            regression_match=self._match_rate(model, regression),
            offtask_call_rate=sum(_is_call(o) for o in off) / len(off),
            offtask_agreement=sum(_norm(a) == _norm(b) for a, b in zip(off, base_offtask, strict=True)) / len(off),
        )

    def _gate(self, candidate: Scores, current: Scores) -> tuple[bool, str]:
        """Promote unless the candidate is worse than what it replaces by more than the margin, anywhere it counts:
        held-out and regression agreement must not drop, and it must not call tools off-task more often."""
        margin = self.config.margin
        problems = []
        for field in ("heldout_match", "regression_match"):
            new, old = getattr(candidate, field), getattr(current, field)
            if new is not None and old is not None and new < old - margin:
                problems.append(f"{field} {new:.2f} < {old:.2f}")
        if candidate.offtask_call_rate > current.offtask_call_rate + margin:
            problems.append(f"offtask_call_rate {candidate.offtask_call_rate:.2f} > {current.offtask_call_rate:.2f}")
        if problems:
            return False, "rejected: " + "; ".join(problems)
        return True, (
            f"promoted: held-out {candidate.heldout_match} vs {current.heldout_match}, "
            f"off-task calls {candidate.offtask_call_rate:.2f} vs {current.offtask_call_rate:.2f}"
        )

    def _routing(self, skill: str, parent: int | None, trained: Sequence[Trajectory]) -> RoutingVector | None:
        """The centroid of the trained tasks, folded into the parent revision's (it was trained on those too)."""
        if self.embedder is None:
            return None
        previous = self.store.revision(skill, parent).routing if parent is not None else None
        return routing_vector(self.embedder, [e.task for e in trained], parent=previous)

    def _regression_set(self, skill: str, exclude: set[str]) -> list[Trajectory]:
        earlier = [
            e
            for e in self.buffer.list(status="success", consolidated=True, instance=self.instance)
            if e.id not in exclude and (e.consolidated_into or "").split("@")[0] == skill
        ]
        return earlier[: self.config.regression_size]

    def _already_tried(self, skill: str, parent: int | None, digest: str) -> int | None:
        for entry in self.store.history(skill):
            record = entry.revision
            if record is not None and record.parent == parent and record.provenance.data_hash == digest:
                return record.number
        return None

    # --------------------------------------------------------------------------------------------- claims

    @contextmanager
    def _claim(self, name: str) -> Iterator[Path | None]:
        """Hold skill `name`'s consolidation lock (waiting at most `lock_timeout` s) and yield its candidate folder,
        or None when another process holds it. The outermost claim sweeps what a crashed holder left there first,
        and removes the folder when it ends."""
        key = name.rsplit("/", 1)[-1]  # a personal view's `alice/x` is the folder `x` of alice's own store
        lock = self._locks.get(key)
        if lock is None:
            (self.store.root / LOCKS).mkdir(parents=True, exist_ok=True)
            lock = self._locks[key] = FileLock(str(self.store.root / LOCKS / f"{key}.lock"))
        try:
            lock.acquire(timeout=self.lock_timeout)
        except Timeout:
            yield None
            return
        work = self.store.root / CANDIDATES / key
        outermost = lock.lock_counter == 1
        try:
            if outermost:
                self._recover(work)
                work.mkdir(parents=True)
            yield work
            if outermost:
                shutil.rmtree(work, ignore_errors=True)
        finally:
            lock.release()

    def _sweep_candidates(self) -> None:
        """Remove the candidate folders no live process holds (each one's lock is free), recovering their reports."""
        folder = self.store.root / CANDIDATES
        if not folder.is_dir():
            return
        for leftover in sorted(folder.iterdir()):
            key = leftover.name
            (self.store.root / LOCKS).mkdir(exist_ok=True)
            lock = self._locks.get(key) or FileLock(str(self.store.root / LOCKS / f"{key}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # a live consolidation's folder
            try:
                if lock.lock_counter == 1:  # not one of this consolidator's own claims in progress
                    self._recover(leftover)
            finally:
                lock.release()

    def _recover(self, work: Path) -> None:
        """A stale candidate folder (its lock is held by us): write the report of the revision it committed before
        the crash, if it got that far, then remove it."""
        if not work.exists():
            return
        try:
            draft = _Draft.model_validate_json((work / _DRAFT).read_bytes())
        except (OSError, ValidationError):
            draft = None  # died before the commit: nothing was committed, nothing to report
        if draft is not None:
            revision = self._committed(draft)
            rejected_new = not draft.report.promoted and draft.report.parent is None  # commits nothing
            if revision is not None or rejected_new:  # decided (and committed), but the report was never written
                reason = f"{draft.report.reason} (report written by a later run: this one was killed)"
                self._write_report(draft.report.model_copy(update={"revision": revision, "reason": reason}))
        shutil.rmtree(work, ignore_errors=True)

    def _committed(self, draft: _Draft) -> int | None:
        """The revision of `draft.report.skill` trained on the draft's data from its parent, if it was committed."""
        skill = draft.report.skill
        try:
            if not self.store.exists(skill):
                return None
            return self._already_tried(skill, draft.report.parent, draft.data_hash)
        except _BROKEN + (SkillNotFoundError,) as error:
            log.warning("cannot tell whether %s was committed before a crash: %s", skill, error)
            return None

    def _taken(self) -> set[str]:
        """Names a new skill cannot have: every skill, and every folder in the store (a broken skill's too)."""
        names = {m.name for m in self.store.list()}
        return names | {p.name for p in self.store.root.iterdir() if not p.name.startswith(".")}

    def _check_target(self, target: str) -> None:
        """Refuse, before any training, a target that cannot take a new revision: its manifest, current revision or
        files unreadable, made for another base, or a folder without a manifest in the way of a new skill."""
        if self.store.exists(target):
            self.store.read_adapter(target)  # manifest, current record, checksums, base fingerprint
        elif (self.store.root / target.rsplit("/", 1)[-1]).exists():
            raise CorruptSkillError(
                f"skill folder {target!r} has no manifest.json",
                hint=f"delete it with `habitloop skills delete {target}`",
            )

    def _groups(self, skill: str | None) -> dict[str | None, list[Trajectory]]:
        episodes = self.buffer.list(status="success", consolidated=False, instance=self.instance)
        return group_episodes(episodes, skill)

    def _busy(self, name: str) -> ConsolidationReport:
        return self._skipped(name, f"skill {name!r} is being consolidated by another process; skipped")

    def _skipped(self, name: str, reason: str) -> ConsolidationReport:
        log.warning("%s", reason)
        return ConsolidationReport(
            skill=name,
            created=False,
            revision=None,
            parent=None,
            promoted=False,
            reason=reason,
            episodes=[],
            n_train=0,
            n_holdout=0,
            n_replay=0,
            candidate=Scores(),
            current=Scores(),
            skipped=True,
        )

    def _report_tried(
        self, skill: str, revision: int, parent: int | None, episodes: list[Trajectory], started: float
    ) -> ConsolidationReport:
        """The report of a rerun on data already tried (marking what a crash left unmarked)."""
        manifest = self.store.get(skill)
        promoted = manifest.status_of(revision) == "promoted"
        if promoted:  # committed before a crash; marking is what was left
            self.buffer.mark_consolidated([e.id for e in episodes], into=f"{skill}@{revision}")
        return ConsolidationReport(
            skill=skill,
            created=False,
            revision=revision,
            parent=parent,
            promoted=promoted,
            reason=f"already tried: revision {revision} was trained on exactly this data; not training again",
            episodes=[e.id for e in episodes],
            n_train=0,
            n_holdout=0,
            n_replay=0,
            candidate=Scores(),
            current=Scores(),
            wall_seconds=time.perf_counter() - started,
        )

    def _write_report(self, report: ConsolidationReport) -> ConsolidationReport:
        if self.reports_dir is None:
            return report
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        stem = f"consolidation-{report.skill}-{report.revision or 'none'}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        plot = self.reports_dir / f"{stem}.png"
        try:
            plot_report(report, plot)
            report = report.model_copy(update={"plot_path": str(plot)})
        except ImportError:  # matplotlib missing: the JSON still says everything
            pass
        path = self.reports_dir / f"{stem}.json"
        report = report.model_copy(update={"report_path": str(path)})
        path.write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
        return report


def plot_report(report: ConsolidationReport, path: Path) -> None:
    """Loss per step, and candidate vs current on each metric, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(range(1, len(report.losses) + 1), report.losses, marker=".")
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    left.set_title(f"{report.skill}: training")
    names = ["heldout_match", "regression_match", "offtask_call_rate", "offtask_agreement"]
    values = [(getattr(report.current, n) or 0.0, getattr(report.candidate, n) or 0.0) for n in names]
    xs = range(len(names))
    baseline = "base" if report.parent is None else f"revision {report.parent}"
    right.bar([x - 0.2 for x in xs], [v[0] for v in values], width=0.4, label=baseline)
    right.bar([x + 0.2 for x in xs], [v[1] for v in values], width=0.4, label="candidate")
    right.set_xticks(list(xs), [n.replace("_", "\n") for n in names], fontsize=8)
    right.set_ylim(0, 1.05)
    right.legend()
    verdict = "promoted" if report.promoted else "rejected"
    right.set_title(f"revision {report.revision}: {verdict}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
