"""The Python API: `Agent(...)`, `agent.run / stream / run_batch / feedback`. The CLI is a thin layer over it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from agent.config import Settings
from agent.graph import Checker, RunContext, build_graph
from agent.models import ChatModel, LocalChatModel
from memory.buffer import EpisodeBuffer
from memory.consolidate import ConsolidationConfig, ConsolidationReport, Consolidator
from memory.trajectory import Outcome, OutcomeStatus, SkillUse, Step, Trajectory, new_id
from skills.errors import SkillNotFoundError, UserError
from skills.instances import LayeredStore, PersonalView, qualify, validate_instance_name
from skills.store import SkillStore
from tools import Tool, ToolContext, ToolRegistry, builtin_tools


class PracticeReport(BaseModel):
    """What `agent.practice` did for one task: every attempt is recorded in the buffer; successes train skills."""

    task: str
    attempts: int
    successes: int
    run_ids: list[str]


class RunResult(BaseModel):
    """What `agent.run` returns: the answer, the outcome and the whole trajectory."""

    run_id: str
    thread_id: str
    answer: str | None
    outcome: Outcome
    trajectory: Trajectory

    @property
    def steps(self) -> list[Step]:
        return self.trajectory.steps


def default_buffer(settings: Settings) -> EpisodeBuffer:
    """The chroma buffer: embedded under `$HABITLOOP_HOME/buffer`, or the server at `HABITLOOP_CHROMA_URL`."""
    from memory.chroma import ChromaBuffer
    from memory.embed import Embedder

    if settings.chroma_url:
        return ChromaBuffer(url=settings.chroma_url, embedder=Embedder())
    return ChromaBuffer(settings.buffer_dir, embedder=Embedder())


def sqlite_checkpointer(path: Path) -> Any:
    """LangGraph's SQLite saver on `path` (created if missing): threads survive the process."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteSaver(sqlite3.connect(str(path), check_same_thread=False))


class Agent:
    """An agent on the shared base: tools to act with, skills to act well, a checkpointer to remember threads.

    Defaults that just work: the base from `Settings` (loaded once, here), the skill store under
    `$HABITLOOP_HOME/skills`, the episode buffer (chromadb under `$HABITLOOP_HOME/buffer`), the built-in tools
    (calculator, workspace files under `$HABITLOOP_HOME/workspace`, recall), and SQLite checkpoints in
    `$HABITLOOP_HOME/state.sqlite`. Pass any of them in to replace it (tests pass `agent.testing.ScriptedChatModel()`
    as `model`, `memory.InMemoryBuffer(HashingEmbedder())` and `langgraph.checkpoint.memory.InMemorySaver()`).

    Every run is recorded in the buffer. Until they are consolidated, the `retrieval_k` most similar successful
    episodes are shown to the model as worked examples; `consolidate()` moves them into a skill's weights.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        base: Any = None,
        model: ChatModel | None = None,
        store: SkillStore | None = None,
        tools: Iterable[Any] | None = None,
        checkpointer: Any = None,
        workspace: Path | None = None,
        max_steps: int = 6,
        max_new_tokens: int = 256,
        tool_timeout: float | None = 30.0,
        recorder: Callable[[Trajectory], None] | None = None,
        buffer: EpisodeBuffer | None = None,
        retrieval_k: int | None = None,
        consolidation: ConsolidationConfig | None = None,
        instance: str | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.residency: Any = None
        # Whose episodes, skills and threads these are: None is the shared agent; "alice" is a personal instance
        # (skills.instances). Every buffer query passes it, so one instance never sees another's episodes.
        self.instance: str | None = None if instance is None else validate_instance_name(instance)
        if model is None:
            from agent.base import load_base
            from skills.residency import Residency

            base = base or load_base(settings=self.settings)
            store = store or SkillStore(self.settings.skills_dir, base_fingerprint=base.fingerprint)
            # An instance's residency reads personal skills too (by `alice/x` names); the shared view is a no-op.
            view = LayeredStore(store, self.settings.instances_dir) if self.instance else store
            self.residency = Residency(
                base.model, cast(SkillStore, view), max_hot=self.settings.max_hot, max_warm=self.settings.max_warm
            )
            model = LocalChatModel(base, self.residency)
        elif isinstance(model, LocalChatModel):
            self.residency = model.residency
        self.base = base
        self.model = model
        self.store = store or SkillStore(self.settings.skills_dir)
        # Skill names resolve through the instance's view: `alice/x` or plain names, personal first.
        self.skills: SkillStore | LayeredStore = self.store
        if self.instance:
            self.skills = LayeredStore(self.store, self.settings.instances_dir, instance=self.instance)
        self.workspace = workspace or self.settings.home / "workspace"
        self.buffer = buffer if buffer is not None else default_buffer(self.settings)
        self.retrieval_k = self.settings.retrieval_k if retrieval_k is None else retrieval_k
        self.consolidation = consolidation or ConsolidationConfig()
        self.tools = ToolRegistry()
        for item in builtin_tools(memory=True) if tools is None else tools:
            self.tools.register(item)
        self.checkpointer = checkpointer or sqlite_checkpointer(self.settings.home / "state.sqlite")
        self.graph = build_graph(self.checkpointer)
        self.max_steps = max_steps
        self.max_new_tokens = max_new_tokens
        self.tool_timeout = tool_timeout
        self.recorder = recorder
        self._runs: dict[str, Trajectory] = {}
        self._last: RunResult | None = None

    # ------------------------------------------------------------------------------------------------- running

    def run(
        self,
        task: str,
        *,
        skills: Sequence[str] = (),
        checker: Checker | None = None,
        thread_id: str | None = None,
        max_steps: int | None = None,
        temperature: float = 0.0,
        examples: int | None = None,
    ) -> RunResult:
        """Run one task to an outcome. The model's mistakes end up in the trajectory, never as exceptions here."""
        for _ in self.stream(
            task,
            skills=skills,
            checker=checker,
            thread_id=thread_id,
            max_steps=max_steps,
            temperature=temperature,
            examples=examples,
        ):
            pass
        return self.last_result

    def stream(
        self,
        task: str,
        *,
        skills: Sequence[str] = (),
        checker: Checker | None = None,
        thread_id: str | None = None,
        max_steps: int | None = None,
        temperature: float = 0.0,
        examples: int | None = None,
    ) -> Iterator[Step]:
        """Run one task, yielding each step (model text, tool call, tool result, refusal, final) as it happens.

        After the iterator is exhausted, `agent.last_result` holds the `RunResult`. `examples` overrides how many
        similar successful episodes are shown as worked examples (default: `retrieval_k`; 0 for none).
        """
        if not isinstance(task, str) or not task.strip():
            raise UserError("the task is empty", hint="pass the task as a non-empty string")
        run_id = new_id()
        thread_id = thread_id or run_id
        context = RunContext(
            instance=self.instance,
            model=self.model,
            tools=self.tools,
            skills=self._resolve_skills(skills),
            examples=self._examples(task, self.retrieval_k if examples is None else examples),
            checker=checker,
            recorder=self._record,
            thread_id=thread_id,
            max_steps=max_steps or self.max_steps,
            max_new_tokens=self.max_new_tokens,
            temperature=temperature,
            tool_timeout=self.tool_timeout,
            tool_context=ToolContext(workspace=self.workspace, run_id=run_id, extras={"recall": self.recall}),
        )
        config = {
            "configurable": {"thread_id": self._thread_key(thread_id)},
            "recursion_limit": 4 * context.max_steps + 10,
        }
        for mode, payload in self.graph.stream(
            {"task": task, "run_id": run_id}, config, context=context, stream_mode=["custom", "values"]
        ):
            if mode == "custom":
                yield Step.model_validate(payload)
            else:
                final = payload
        trajectory = Trajectory.model_validate(final["trajectory"])
        self._last = RunResult(
            run_id=run_id,
            thread_id=thread_id,
            answer=trajectory.answer,
            outcome=trajectory.outcome,
            trajectory=trajectory,
        )
        self._maybe_consolidate(skills)  # after the turn, never inside it; for run() and stream() alike

    @property
    def last_result(self) -> RunResult:
        """The result of the latest finished `run` or fully consumed `stream`."""
        if self._last is None:
            raise UserError("no run has finished yet", hint="consume agent.stream(...) to the end, or call agent.run")
        return self._last

    def run_batch(self, tasks: Iterable[str | dict[str, Any]]) -> list[RunResult]:
        """Run several tasks, each a string or a dict of `run`'s keyword arguments (`{"task": ..., "skills": ...}`).

        Sequential for now; mixed-skill batching on the one base comes with the composition issue.
        """
        results = []
        for item in tasks:
            kwargs = {"task": item} if isinstance(item, str) else dict(item)
            results.append(self.run(kwargs.pop("task"), **kwargs))
        return results

    def feedback(
        self, run_id: str, status: OutcomeStatus, *, reason: str = "", score: float | None = None
    ) -> Trajectory:
        """Record a user's verdict on a finished run (it replaces the earlier outcome, in the buffer too)."""
        trajectory = self._runs.get(run_id)
        if trajectory is None:
            try:
                trajectory = self.buffer.get(run_id)
            except UserError:
                trajectory = None
        if trajectory is None or trajectory.instance != self.instance:  # another instance's run is not ours to judge
            raise UserError(f"no run {run_id!r} in this agent or its buffer", hint="pass the run_id of a RunResult")
        trajectory = trajectory.model_copy(
            update={"outcome": Outcome(status=status, score=score, judged_by="user", reason=reason)}
        )
        self._record(trajectory)
        return trajectory

    # ------------------------------------------------------------------------------------------------- learning

    def practice(
        self,
        tasks: Iterable[str],
        checker: Checker,
        *,
        attempts: int = 4,
        temperature: float = 0.7,
        skills: Sequence[str] = (),
        max_steps: int | None = None,
    ) -> list[PracticeReport]:
        """Rejection sampling (STaR-style): up to `attempts` samples per task, each judged and recorded; stop at the
        first success. The successes are what `consolidate()` trains on."""
        if attempts < 1:
            raise UserError("attempts must be at least 1")
        reports = []
        for task in tasks:
            run_ids, successes = [], 0
            for _ in range(attempts):
                result = self.run(
                    task, skills=skills, checker=checker, temperature=temperature, max_steps=max_steps, examples=0
                )
                run_ids.append(result.run_id)
                if result.outcome.status == "success":
                    successes += 1
                    break
            reports.append(PracticeReport(task=task, attempts=len(run_ids), successes=successes, run_ids=run_ids))
        return reports

    def learn_from(self, demonstration: Trajectory) -> Trajectory:
        """Record a user's demonstration (e.g. `Trajectory.demonstration(task, replies)`) as a success."""
        trajectory = demonstration.model_copy(
            update={
                "outcome": Outcome(status="success", judged_by="user", reason="demonstration"),
                "system_prompt": demonstration.system_prompt or self.system_prompt(),
                "instance": self.instance,
            }
        )
        self._record(trajectory)
        return trajectory

    def system_prompt(self) -> str | None:
        """The system prompt this agent's model sees (its tools' schemas)."""
        from agent.prompt import system_prompt

        return system_prompt(self.tools.schemas())

    def consolidate(self, skill: str | None = None, *, min_episodes: int | None = None) -> list[ConsolidationReport]:
        """Train the buffer's unconsolidated successes into skills (a new revision each, gated against the current
        one) and let those episodes go from the retrieval pool. Needs the local model (the shared base)."""
        if self.residency is None or self.base is None:
            raise UserError("consolidation trains adapters on the local base; this agent has no local model")
        config = self.consolidation
        if min_episodes is not None:
            config = config.model_copy(update={"min_episodes": min_episodes})
        store: Any = self.store
        if self.instance:  # an instance trains into its own store only, never into a shared skill
            store = PersonalView(self.personal_store(), self.instance)
            skill = None if skill is None else qualify(self.instance, store.bare(skill))
        consolidator = Consolidator(
            self.buffer,
            store,
            self.residency,
            self.base.tokenizer,
            config=config,
            reports_dir=self.settings.reports_dir,
            instance=self.instance,
        )
        return consolidator.run(skill)

    def recall(self, query: str, k: int = 3) -> list[tuple[str, str, float]]:
        """(task, answer, similarity) of the most similar successful episodes not yet consolidated."""
        hits = self.buffer.search(query, k=k, status="success", consolidated=False, instance=self.instance)
        return [(t.task, t.answer or "", score) for t, score in hits]

    def thread(self, thread_id: str) -> list[dict[str, Any]]:
        """The conversation saved for a thread (empty when the thread is unknown)."""
        snapshot = self.graph.get_state({"configurable": {"thread_id": self._thread_key(thread_id)}})
        return list(snapshot.values.get("messages", [])) if snapshot and snapshot.values else []

    # ------------------------------------------------------------------------------------------------- internals

    def personal_store(self) -> SkillStore:
        """This instance's own skill store (`$HABITLOOP_HOME/instances/<instance>/`)."""
        if not isinstance(self.skills, LayeredStore):
            raise UserError("this agent is not a personal instance", hint="create it with Agent(instance=...)")
        return self.skills.personal()

    def _thread_key(self, thread_id: str) -> str:
        """Threads are namespaced per instance: alice's thread "t1" is never bob's "t1"."""
        return thread_id if self.instance is None else f"instance:{self.instance}:{thread_id}"

    def _resolve_skills(self, names: Sequence[str]) -> list[SkillUse]:
        uses = []
        for name in names:
            if isinstance(self.skills, LayeredStore):
                name = self.skills.canonical(name)
            try:
                manifest = self.skills.get(name)
            except SkillNotFoundError as error:
                raise SkillNotFoundError(error.message, hint="see `habitloop skills list`") from error
            uses.append(SkillUse(name=name, revision=manifest.current, reason="requested"))
        return uses

    def _record(self, trajectory: Trajectory) -> None:
        self._runs[trajectory.id] = trajectory
        self.buffer.add(trajectory)
        self.buffer.enforce_capacity(self.settings.buffer_max_unconsolidated, self.settings.buffer_max_age_days)
        if self.recorder is not None:
            self.recorder(trajectory)

    def _examples(self, task: str, k: int) -> list[tuple[str, list[dict[str, Any]]]]:
        if k <= 0:
            return []
        hits = self.buffer.search(task, k=k, status="success", consolidated=False, instance=self.instance)
        return [(t.id, t.run_messages) for t, _ in hits]

    def _maybe_consolidate(self, skills: Sequence[str]) -> None:
        """Automatic consolidation, after the turn (never inside it), when enabled and enough successes wait."""
        threshold = self.settings.auto_consolidate_after
        if threshold is None or self.residency is None:
            return
        waiting = self.buffer.list(status="success", consolidated=False, instance=self.instance)
        target = skills[0] if skills else None
        mine = [t for t in waiting if (t.skills[0].name if t.skills else None) in (target, None)]
        if len(mine) >= threshold:
            self.consolidate(target, min_episodes=threshold)


def load_tools(spec: str) -> list[Tool | Any]:
    """Import tools from `module:attr` (a tool, a function to wrap with @tool, a LangChain tool, or a list of them),
    or from `pack:NAME`, an installed skill pack's tools."""
    import importlib

    from tools import tool as make_tool

    module_name, _, attr = spec.partition(":")
    if module_name == "pack":  # `pack:NAME`: an installed pack's tools (only if installed with --trust-code)
        from skills.packs import load_pack_tools

        return [
            item if hasattr(item, "invoke") else make_tool(item) for item in load_pack_tools(attr, Settings().packs_dir)
        ]
    if not module_name or not attr:
        raise UserError(f"--tools {spec!r} is not 'module:attr'", hint="e.g. --tools mypkg.tools:TOOLS")
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise UserError(f"cannot import tools from {spec!r}: {error}") from error
    items = value if isinstance(value, list | tuple) else [value]
    # Tools and LangChain tools have `invoke`; a plain typed function is wrapped with @tool.
    return [item if hasattr(item, "invoke") else make_tool(item) for item in items]
