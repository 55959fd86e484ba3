"""Consolidation: successful episodes in the buffer become a new revision of a skill adapter.

    claim the skill -> build the dataset (+ self-distillation replay, + negatives) -> train a candidate (continuing
    from the current revision) -> score candidate and current -> gate -> commit (promoted or rejected) -> mark the
    episodes consolidated -> report

`Consolidator._consolidate` is that sequence, one method per step; the pieces live beside it: `memory.dataset`
(grouping, dedup, split, names), `memory.offtask` (replay, the off-task check), `memory.negatives` (negatives, the
relevance check), `memory.gate` (scores, the decision), `memory.report`, `memory.recipe`. Here: order and safety.

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

import logging
import os
import resource
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from memory.buffer import EpisodeBuffer
from memory.claims import CANDIDATES, LOCKS, SkillClaims
from memory.composed import companions, composed_replay
from memory.dataset import Chat, Dataset, derive_name, group_episodes, split_holdout, system_prompts, unique_episodes
from memory.embed import TextEmbedder, routing_vector
from memory.facts import MEMORY_SKILL, fact_pairs, split_pairs
from memory.forget_plan import pending_forgets, without
from memory.gate import ModelScorer, Scorer, Scores, Trial, decide
from memory.negatives import Relevance, build_relevance
from memory.offtask import (
    OFF_TASK_EVAL,
    OFF_TASK_TRAIN,
    OFFTASK_TOKENS,
    looks_like_tool_call,
    off_task_chats,
    replay_count,
)
from memory.recipe import ConsolidationConfig
from memory.report import DRAFT, ConsolidationReport, ReportDraft, skipped_report, tried_report, write_report
from memory.target import Target, taken_names
from memory.trajectory import Trajectory
from skills.errors import BaseMismatchError, CorruptSkillError, SkillNotFoundError, UserError
from skills.generation import generate
from skills.manifest import Evaluation, RoutingVector, validate_skill_name
from skills.residency import Residency
from skills.store import SkillStore
from skills.train import TrainResult, train_lora

__all__ = ["CANDIDATES", "LOCKS", "ConsolidationConfig", "ConsolidationReport", "Consolidator", "crash_point"]

log = logging.getLogger("habitloop.consolidate")
# Errors that make a skill unusable as a consolidation target: skipped (with a warning) unless named explicitly.
_BROKEN = (CorruptSkillError, BaseMismatchError)


def crash_point(name: str) -> None:
    """Die here, as kill -9 would, when HABITLOOP_CRASH_AT names this point: the crash-safety tests use it."""
    if os.environ.get("HABITLOOP_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------------------------- the run


class Consolidator:
    """Consolidates buffer episodes into skills. Resources are passed in: the buffer, the store, the residency
    holding the shared base (training and evaluation run on `residency.model`) and the tokenizer.

    `embedder` (default: the buffer's own, when it has one) embeds the trained tasks into the centroid stored with
    each new revision (`RevisionRecord.routing`), which the router compares tasks with; None stores no centroid.

    `is_tool_call` tells the gate which off-task replies call a tool. memory cannot read the agent's tool-call formats,
    so the default, `memory.offtask.looks_like_tool_call`, knows only `<tool_call>` tags and bare JSON; the agent
    passes its own parser (fenced and Python-style calls too). `scorer` replaces the whole scoring of candidate and
    current model (default: a `memory.gate.Scorer` with `is_tool_call`), e.g. to test the gate's decisions.
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
        is_tool_call: Callable[[str], bool] = looks_like_tool_call,
        scorer: ModelScorer | None = None,
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
        self.is_tool_call = is_tool_call
        self._scorer = scorer
        self._claims = SkillClaims(store.root, recover=self._recover)

    def reconcile(self) -> list[str]:
        """Finish what crashed runs left: remove their candidate folders (writing the report of a revision committed
        before the crash), and mark episodes of promoted revisions that the buffer still holds as unconsolidated.
        A revision that cannot be read is skipped with a warning. Returns the ids marked."""
        self._claims.sweep()
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

    def consolidate_facts(self, skill: str = MEMORY_SKILL) -> ConsolidationReport | None:
        """What the user said (every unconsolidated episode of this instance that did not fail) into `skill`, made
        with the facts recipe (`config.facts`, see `memory.facts`), under the skill's lock. None: too few episodes."""
        if self.config.facts is None:
            raise UserError("this consolidation recipe has no facts part", hint="use memory.recipe.facts_recipe()")
        with self._claim(validate_skill_name(skill)) as work:
            if work is None:
                return self._busy(skill)
            self.reconcile()
            waiting = self._waiting(consolidated=False)
            said = [e for e in waiting if e.outcome.status != "failure"]
            if len(said) < self.config.min_episodes:
                return None
            return self._consolidate(skill, said, work)

    def consolidate(self, target: str | None, episodes: Sequence[Trajectory]) -> ConsolidationReport:
        """One skill: dataset, training, evaluation, commit, marking, report; under the skill's lock (a `skipped`
        report when another process holds it). `target` None creates a skill named after the episodes' tasks."""
        if target is None:
            target = derive_name(episodes, taken_names(self.store))[0]
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
            name = target if target is not None else derive_name(group, taken_names(self.store))[0]
            with self._claim(name) as work:
                if work is None:
                    return self._busy(name)
                self.reconcile()  # a run that died between its commit and its marking: mark its episodes first
                group = self._groups(skill).get(target, [])
                if len(group) < self.config.min_episodes:
                    return None  # another process consolidated them while this one waited
                if target is None and derive_name(group, taken_names(self.store))[0] != name:
                    continue
                return self._consolidate(name, group, work)
        return self._skipped("(new skill)", "new skill names kept being taken by other processes; skipped")

    def _consolidate(self, name: str, episodes: Sequence[Trajectory], work: Path) -> ConsolidationReport:
        """Under the claim on `name` (its candidate folder `work`): build the dataset, train a candidate, score it and
        what it would replace, gate, commit (promoted or rejected), mark the episodes, write the report."""
        started = time.perf_counter()
        target = self._target(name, episodes)
        data, offtask_chats, base_offtask, relevance = self._build_dataset(episodes)
        if not target.created:
            tried = self._already_tried(target.name, target.parent, data.digest)
            if tried is not None:
                return self._report_tried(target.name, tried, target.parent, data.chosen, started)
        regression = [] if target.created else self._regression_set(target.name, exclude={e.id for e in data.chosen})
        trial = Trial(data.holdout, regression, offtask_chats, base_offtask, relevance.gate_chats)
        result = self._train_candidate(target, data, work)
        candidate, current = self._score_candidate_and_current(target, result.adapter_dir, trial)
        promoted, reason = decide(candidate, current, self.config.margin, self.config.relevance_margin)
        report = self._report(target, data, result, candidate, current, promoted, reason, relevance)
        revision = self._commit(target, data, result, report, work)
        crash_point("committed")
        if promoted and revision is not None:
            self.buffer.mark_consolidated([e.id for e in data.chosen], into=f"{target.name}@{revision}")
        crash_point("marked")
        return self._finish_report(report, revision, started, work)

    # --------------------------------------------------------------------------------------------- the steps

    def _target(self, name: str, episodes: Sequence[Trajectory]) -> Target:
        """Check that `name` can take a new revision (before any training) and read what it continues from."""
        description = derive_name(episodes, set())[1]
        if self.config.facts is not None:
            description = f"What {self.instance or 'the user'} told the agent, learned as facts (memory.facts)."
        elif self.config.style is not None:
            description = self.config.style.describe()
        return Target.of(self.store, name, description)

    def _build_dataset(self, episodes: Sequence[Trajectory]) -> tuple[Dataset, list[Chat], list[str], Relevance]:
        """Deduplicate, split (episodes, or with the facts recipe the pairs made from what the user said), add the
        base's replay answers and the negatives; also the off-task chats of the gate, the base's answers to them (all
        asked of the base in one go) and the gate's held-out mismatched cases."""
        cfg = self.config
        chosen = unique_episodes(episodes, by_task=cfg.facts is not None)
        systems = system_prompts(chosen)
        with self.residency.base_only() as model:
            if cfg.facts is None:
                train, holdout = split_holdout(chosen, cfg.holdout_fraction)
                trained, size = None, len(train)
            else:
                ask = lambda chats, tokens: generate(model, self.tokenizer, chats, max_new_tokens=tokens)  # noqa: E731
                pairs, held = split_pairs(fact_pairs(chosen, ask, cfg.facts), cfg.facts.holdout_fraction)
                train, holdout = chosen, [Trajectory.demonstration(p.question, p.answer) for p in held]
                trained, size = [p.example() for p in pairs], len(pairs)
            replay = replay_count(size, floor=cfg.replay, share=cfg.replay_share)
            replay_chats = off_task_chats(OFF_TASK_TRAIN[:replay], systems)
            offtask_chats = off_task_chats(OFF_TASK_EVAL, systems)
            replay_answers = [] if cfg.compose_with else self._generate(model, replay_chats)
            base_offtask = self._generate(model, offtask_chats, OFFTASK_TOKENS)
            relevance = build_relevance(
                train, holdout, cfg, self.embedder, partial(self._generate, model), self.is_tool_call
            )
        if cfg.compose_with:  # the replay is the companions' answer (memory.composed)
            replay_chats, replay_answers = composed_replay(cfg, self.residency, self.tokenizer, replay_chats)
        data = Dataset.build(
            chosen, train, holdout, replay_chats, replay_answers, trained=trained, negatives=relevance.examples
        )
        return data, offtask_chats, base_offtask, relevance

    def _train_candidate(self, target: Target, data: Dataset, work: Path) -> TrainResult:
        """Train the candidate into `work`, the claimed folder (swept by the next claim if this run dies), continuing
        from the current revision."""
        cfg = self.config
        train_config = cfg.train_config(len(data.examples))
        under = companions(self.residency, cfg)  # loaded first: the first load makes the model a PeftModel
        result = train_lora(
            self.residency.model, self.tokenizer, data.examples, work / "candidate", config=train_config,
            init_from=None if target.created else self.store.revision_dir(target.name),
            episode_ids=[e.id for e in data.train], progress=self.progress,
            on_step=lambda step, loss: crash_point("training") if step >= 2 else None, under=under,
        )  # fmt: skip
        crash_point("saved")
        return result

    def _score_candidate_and_current(self, target: Target, candidate_dir: Path, trial: Trial) -> tuple[Scores, Scores]:
        """The candidate's scores and those of what it would replace (the current revision, or the base)."""
        scorer = self.scorer
        with self.residency.trial(candidate_dir) as model:
            candidate = scorer(model, trial)
        if target.created:
            with self.residency.base_only() as model:
                current = scorer(model, trial)
        else:
            self.residency.activate(target.name)
            current = scorer(self.residency.model, trial)
        return candidate, current

    def _report(
        self,
        target: Target,
        data: Dataset,
        result: TrainResult,
        candidate: Scores,
        current: Scores,
        promoted: bool,
        reason: str,
        relevance: Relevance,
    ) -> ConsolidationReport:
        """The report of the decision, before the commit gives it a revision."""
        return ConsolidationReport(
            skill=target.name,
            created=target.created and promoted,
            revision=None,
            parent=target.parent,
            promoted=promoted,
            reason=reason,
            episodes=[e.id for e in data.chosen],
            n_train=len(data.train),
            n_holdout=len(data.holdout),
            n_replay=len(data.replay_chats),
            **relevance.report_fields(),
            candidate=candidate,
            current=current,
            losses=result.losses,
            train_seconds=result.seconds,
            train_tokens_per_second=result.tokens_per_second,
        )

    def _commit(
        self, target: Target, data: Dataset, result: TrainResult, report: ConsolidationReport, work: Path
    ) -> int | None:
        """Save the report's draft in `work`, then commit the candidate (atomically): a new skill if it was promoted,
        else a new revision of the target, promoted or rejected. Returns its number; None for a new skill that is no
        better than the base (it is not created at all)."""
        provenance = result.provenance.model_copy(
            update={"episode_ids": tuple(e.id for e in data.chosen), "data_hash": data.digest}
        )
        evaluation = Evaluation(
            metrics={f"candidate_{k}": v for k, v in report.candidate.model_dump().items() if v is not None}
            | {f"current_{k}": v for k, v in report.current.model_dump().items() if v is not None},
            details={
                "reason": report.reason,
                "holdout": [e.id for e in data.holdout],
                "config": self.config.model_dump(),
            },
        )
        routing = self._routing(target.name, target.parent, data.train)
        # the report's draft, kept in `work` until the report is written, then the commit
        (work / DRAFT).write_text(ReportDraft(report=report, data_hash=data.digest).model_dump_json())
        if target.created and report.promoted:
            self.store.create(
                target.name,
                result.adapter_dir,
                kind=self.config.kind,
                description=target.description,
                provenance=provenance,
                evaluation=evaluation,
                routing=routing,
            )
            return 1
        if target.created:
            return None
        return self.store.add_revision(
            target.name,
            result.adapter_dir,
            provenance=provenance,
            evaluation=evaluation,
            promote=report.promoted,
            note=report.reason,
            routing=routing,
        ).number

    def _finish_report(
        self, report: ConsolidationReport, revision: int | None, started: float, work: Path
    ) -> ConsolidationReport:
        """The final report (revision, wall time, peak memory), written; then the draft goes."""
        report = report.model_copy(
            update={
                "revision": revision,
                "wall_seconds": time.perf_counter() - started,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
        report = write_report(report, self.reports_dir)
        (work / DRAFT).unlink()  # written: nothing left for a sweep to recover
        return report

    # --------------------------------------------------------------------------------------------- internals

    @property
    def scorer(self) -> ModelScorer:
        """The scorer the gate compares with: the one passed in, else a `Scorer` with this consolidator's tokenizer,
        `config.max_new_tokens` (read at each use) and `is_tool_call`."""
        if self._scorer is not None:
            return self._scorer
        match = self.config.reply_match()
        return Scorer(
            self.tokenizer, max_new_tokens=self.config.max_new_tokens, is_tool_call=self.is_tool_call, match=match
        )

    def _generate(self, model: Any, chats: list[Chat], limit: int | None = None) -> list[str]:
        """Replies generated exactly as the default scorer generates them, so the base's off-task answers compare."""
        return Scorer(self.tokenizer, max_new_tokens=self.config.max_new_tokens).generate(model, chats, limit)

    def _routing(self, skill: str, parent: int | None, trained: Sequence[Trajectory]) -> RoutingVector | None:
        """The centroid of the trained tasks, folded into the parent revision's (it was trained on those too)."""
        if self.embedder is None:
            return None
        previous = self.store.revision(skill, parent).routing if parent is not None else None
        return routing_vector(self.embedder, [e.task for e in trained], parent=previous)

    def _regression_set(self, skill: str, exclude: set[str]) -> list[Trajectory]:
        if self.config.facts is not None:  # episodes of earlier revisions are statements, with no reply to check
            return []
        earlier = [
            e
            for e in self._waiting(status="success", consolidated=True)
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

    def _claim(self, name: str) -> AbstractContextManager[Path | None]:
        return self._claims.claim(name, self.lock_timeout)

    def _recover(self, work: Path) -> None:
        """A stale candidate folder: write the report of the revision it committed before the crash, if it got that
        far (the claims remove the folder after)."""
        try:
            draft = ReportDraft.model_validate_json((work / DRAFT).read_bytes())
        except (OSError, ValidationError):
            return  # died before the commit: nothing was committed, nothing to report
        revision = self._committed(draft)
        rejected_new = not draft.report.promoted and draft.report.parent is None  # commits nothing
        if revision is not None or rejected_new:  # decided (and committed), but the report was never written
            reason = f"{draft.report.reason} (report written by a later run: this one was killed)"
            write_report(draft.report.model_copy(update={"revision": revision, "reason": reason}), self.reports_dir)

    def _committed(self, draft: ReportDraft) -> int | None:
        """The revision of `draft.report.skill` trained on the draft's data from its parent, if it was committed."""
        skill = draft.report.skill
        try:
            if not self.store.exists(skill):
                return None
            return self._already_tried(skill, draft.report.parent, draft.data_hash)
        except _BROKEN + (SkillNotFoundError,) as error:
            log.warning("cannot tell whether %s was committed before a crash: %s", skill, error)
            return None

    def _groups(self, skill: str | None) -> dict[str | None, list[Trajectory]]:
        return group_episodes(self._waiting(status="success", consolidated=False), skill)

    def _waiting(self, **filters: Any) -> list[Trajectory]:
        """This instance's episodes (`buffer.list` filters), less those an unfinished forget is removing."""
        return without(self.buffer.list(instance=self.instance, **filters), pending_forgets(self.store.root))

    def _busy(self, name: str) -> ConsolidationReport:
        return self._skipped(name, f"skill {name!r} is being consolidated by another process; skipped")

    def _skipped(self, name: str, reason: str) -> ConsolidationReport:
        log.warning("%s", reason)
        return skipped_report(name, reason)

    def _report_tried(
        self, skill: str, revision: int, parent: int | None, episodes: list[Trajectory], started: float
    ) -> ConsolidationReport:
        """The report of a rerun on data already tried (marking what a crash left unmarked)."""
        promoted = self.store.get(skill).status_of(revision) == "promoted"
        if promoted:  # committed before a crash; marking is what was left
            self.buffer.mark_consolidated([e.id for e in episodes], into=f"{skill}@{revision}")
        return tried_report(skill, revision, parent, promoted, [e.id for e in episodes], time.perf_counter() - started)
