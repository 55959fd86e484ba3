"""Consolidation: successful episodes in the buffer become a new revision of a skill adapter.

    select -> dataset (+ self-distillation replay) -> train (continuing from the current revision) -> evaluate the
    candidate against the current revision -> commit (promoted or rejected) -> mark the episodes consolidated -> report

Crash safety comes from the order of the writes and from one reconciling step at the start of every run:
- the store commits a revision atomically (folder rename, then manifest rename); the buffer is only touched after;
- a revision's provenance lists the episode ids it was trained on, so a run that died after the commit but before
  the buffer was updated is finished by the next run (`reconcile`), which marks those episodes then;
- a rerun on the same data finds the revision already tried (same data hash, same parent) and does not train again.
So a kill at any moment loses no episode and never marks one consolidated into a revision that was not committed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import resource
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from memory.buffer import EpisodeBuffer
from memory.embed import TextEmbedder, routing_vector
from memory.offtask import OFF_TASK_EVAL, OFF_TASK_TRAIN
from memory.trajectory import Trajectory
from skills.generation import generate
from skills.manifest import Evaluation, LoraSpec, RoutingVector, validate_skill_name
from skills.residency import Residency
from skills.store import SkillStore
from skills.train import ChatExample, ChatMessage, TrainConfig, data_hash, train_lora

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

    def reconcile(self) -> list[str]:
        """Finish what a crashed run committed: mark episodes of promoted revisions that the buffer still holds as
        unconsolidated. Returns the ids marked."""
        pending = {e.id for e in self.buffer.list(consolidated=False, instance=self.instance)}
        marked: list[str] = []
        if not pending:
            return marked
        for manifest in self.store.list():
            for number in manifest.revision_numbers():
                if manifest.status_of(number) != "promoted":
                    continue
                ids = [i for i in self.store.revision(manifest.name, number).provenance.episode_ids if i in pending]
                if ids:
                    self.buffer.mark_consolidated(ids, into=f"{manifest.name}@{number}")
                    pending.difference_update(ids)
                    marked += ids
        return marked

    def run(self, skill: str | None = None) -> list[ConsolidationReport]:
        """Consolidate every group of enough new successes (or only those for `skill`)."""
        if skill is not None:
            validate_skill_name(skill)
        self.reconcile()
        episodes = self.buffer.list(status="success", consolidated=False, instance=self.instance)
        reports = []
        for target, group in group_episodes(episodes, skill).items():
            if len(group) >= self.config.min_episodes:
                reports.append(self.consolidate(target, group))
        return reports

    def consolidate(self, target: str | None, episodes: Sequence[Trajectory]) -> ConsolidationReport:
        """One skill: dataset, training, evaluation, commit, marking, report."""
        started = time.perf_counter()
        cfg = self.config
        created = target is None or not self.store.exists(target)
        description = ""
        if target is None:
            target, description = derive_name(episodes, {m.name for m in self.store.list()})
        elif created:
            description = derive_name(episodes, set())[1]
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
        with tempfile.TemporaryDirectory(prefix="habitloop-candidate-") as tmp:
            result = train_lora(
                self.residency.model,
                self.tokenizer,
                examples,
                Path(tmp) / "candidate",
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

            # 4. commit (atomic), then mark the episodes
            provenance = result.provenance.model_copy(
                update={"episode_ids": tuple(e.id for e in chosen), "data_hash": digest}
            )
            evaluation = Evaluation(
                metrics={f"candidate_{k}": v for k, v in candidate.model_dump().items() if v is not None}
                | {f"current_{k}": v for k, v in current.model_dump().items() if v is not None},
                details={"reason": reason, "holdout": [e.id for e in holdout], "config": cfg.model_dump()},
            )
            routing = self._routing(target, parent, train_eps)
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
                revision: int | None = 1
            elif created:
                revision = None  # a new skill that is no better than the base is not created at all
            else:
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

        report = ConsolidationReport(
            skill=target,
            created=created and promoted,
            revision=revision,
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
            wall_seconds=time.perf_counter() - started,
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )
        return self._write_report(report)

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
            if record.parent == parent and record.provenance.data_hash == digest:
                return record.number
        return None

    def _report_tried(
        self, skill: str, revision: int, parent: int | None, episodes: list[Trajectory], started: float
    ) -> ConsolidationReport:
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
