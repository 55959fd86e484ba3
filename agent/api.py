"""The Python API: `Agent(...)`, `agent.run / stream / run_batch / feedback`. The CLI is a thin layer over it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatModel
from agent.config import Settings
from agent.graph import Checker, RunContext, build_graph
from agent.options import RunOptions
from agent.practice import PracticeReport, rejection_sample
from agent.router import RouteDecision, Router
from agent.runtime import default_buffer, local_runtime, sqlite_checkpointer
from memory.buffer import EpisodeBuffer
from memory.consolidate import ConsolidationConfig, ConsolidationReport, Consolidator
from memory.facts import MEMORY_SKILL
from memory.forget import ForgetReport, Forgetter, recipe_retrainer
from memory.recipe import facts_recipe
from memory.trajectory import Outcome, OutcomeStatus, SkillUse, Step, Trajectory, new_id
from skills.errors import SkillNotFoundError, UserError
from skills.instances import LayeredStore, PersonalView, qualify, validate_instance_name
from skills.reference import SkillRef
from skills.store import SkillStore
from tools import ToolContext, ToolRegistry, builtin_tools, parse_tool_calls


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
        router: Router | None = None,
        auto_route: bool | None = None,
        instance: str | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.residency: Any = None
        # Whose episodes, skills and threads these are: None is the shared agent; "alice" is a personal instance
        # (skills.instances). Every buffer query passes it, so one instance never sees another's episodes.
        self.instance: str | None = None if instance is None else validate_instance_name(instance)
        if model is None:
            # An instance's residency reads personal skills too (by `alice/x` names); the shared one reads the store.
            personal = self.settings.instances_dir if self.instance else None
            runtime = local_runtime(self.settings, base=base, store=store, instances_dir=personal)
            base, store, self.residency, model = runtime.base, runtime.store, runtime.residency, runtime.model
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
        # Routing is off unless asked for (a router passed in, HABITLOOP_ROUTE, or auto_route=True): `run(task)` with
        # no skills then runs the base alone, as it always did.
        self.auto_route = (router is not None or self.settings.route) if auto_route is None else auto_route
        self._router = router
        self._runs: dict[str, Trajectory] = {}
        self._last: RunResult | None = None
        # run_batch runs graphs in threads: the buffer and the recorder see one writer at a time
        self._buffer_lock = threading.RLock()

    # ------------------------------------------------------------------------------------------------- running

    def run(
        self,
        task: str,
        *,
        skills: Sequence[str | SkillRef] = (),
        checker: Checker | None = None,
        thread_id: str | None = None,
        max_steps: int | None = None,
        temperature: float = 0.0,
        examples: int | None = None,
        route: bool | None = None,
        tools: ToolRegistry | None = None,
    ) -> RunResult:
        """Run one task to an outcome. The model's mistakes end up in the trajectory, never as exceptions here.
        The options are `stream`'s."""
        options = RunOptions(
            skills=tuple(skills),
            checker=checker,
            thread_id=thread_id,
            max_steps=max_steps,
            temperature=temperature,
            examples=examples,
            route=route,
            tools=tools,
        )
        for _ in self._stream(task, options):
            pass
        return self.last_result

    def stream(
        self,
        task: str,
        *,
        skills: Sequence[str | SkillRef] = (),
        checker: Checker | None = None,
        thread_id: str | None = None,
        max_steps: int | None = None,
        temperature: float = 0.0,
        examples: int | None = None,
        route: bool | None = None,
        tools: ToolRegistry | None = None,
    ) -> Iterator[Step]:
        """Run one task, yielding each step (model text, tool call, tool result, refusal, final) as it happens.

        After the iterator is exhausted, `agent.last_result` holds the `RunResult`. `examples` overrides how many
        similar successful episodes are shown as worked examples (default: `retrieval_k`; 0 for none). When `skills`
        is empty and routing is on (`route`, default: the agent's `auto_route`), the router chooses the skills.
        `tools` replaces the agent's tools for this run only (an evaluation offers each case its own functions).
        """
        options = RunOptions(
            skills=tuple(skills),
            checker=checker,
            thread_id=thread_id,
            max_steps=max_steps,
            temperature=temperature,
            examples=examples,
            route=route,
            tools=tools,
        )
        yield from self._stream(task, options)

    def _stream(self, task: str, options: RunOptions) -> Iterator[Step]:
        result: list[RunResult] = []
        yield from self._execute(task, options, model=self.model, result=result)
        self._last = result[0]
        self._maybe_consolidate([s.name for s in self._last.trajectory.skills])  # after the turn, never inside it

    def _execute(self, task: str, options: RunOptions, *, model: ChatModel, result: list[RunResult]) -> Iterator[Step]:
        """One run of the graph with `model`; yields its steps and appends its `RunResult` to `result`."""
        if not isinstance(task, str) or not task.strip():
            raise UserError("the task is empty", hint="pass the task as a non-empty string")
        run_id = new_id()
        thread_id = options.thread_id or run_id
        routed = not options.skills and (self.auto_route if options.route is None else options.route)
        context = RunContext(
            instance=self.instance,
            model=model,
            tools=self.tools if options.tools is None else options.tools,
            skills=self._resolve_skills(options.skills),
            router=self.router.skill_uses if routed else None,
            examples=self._examples(task, self.retrieval_k if options.examples is None else options.examples),
            checker=options.checker,
            recorder=self._record,
            thread_id=thread_id,
            max_steps=options.max_steps or self.max_steps,
            max_new_tokens=self.max_new_tokens,
            temperature=options.temperature,
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
        result.append(
            RunResult(
                run_id=run_id,
                thread_id=thread_id,
                answer=trajectory.answer,
                outcome=trajectory.outcome,
                trajectory=trajectory,
            )
        )

    @property
    def router(self) -> Router:
        """The router (built on first use from `Settings.route_*`, embedding with the buffer's embedder so that
        tasks and the centroids consolidation stores are in one vector space)."""
        if self._router is None:
            from memory.embed import Embedder

            embedder = getattr(self.buffer, "embedder", None) or Embedder()
            self._router = Router(
                self.store,
                embedder,
                top_k=self.settings.route_top_k,
                threshold=self.settings.route_threshold,
                pinned=self.settings.route_pinned,
            )
        return self._router

    def route(self, task: str, **options: Any) -> RouteDecision:
        """Which skills the router would choose for `task`, and every candidate's score, without running it.
        `options`: `top_k`, `threshold`, `pinned`, `floor` for this call."""
        return self.router.decide(task, **options)

    @property
    def last_result(self) -> RunResult:
        """The result of the latest finished `run` or fully consumed `stream`."""
        if self._last is None:
            raise UserError("no run has finished yet", hint="consume agent.stream(...) to the end, or call agent.run")
        return self._last

    def run_batch(
        self, tasks: Iterable[str | dict[str, Any]], *, concurrency: int = 8, max_wait_ms: float = 50.0
    ) -> list[RunResult]:
        """Run several tasks together, each a string or a dict of `run`'s keyword arguments
        (`{"task": ..., "skills": [...]}`); results in the order given.

        Up to `concurrency` runs go through the graph at once, in threads; their generation steps meet in a
        `BatchingChatModel`, so the model answers them as one mixed-skill batch (each row with its own skills) instead
        of one task at a time. Tool calls, checkers and recording run in the runs' own threads. A run that fails
        with an exception fails only its own slot: the exception is raised after every other run has finished.
        Automatic consolidation, if enabled, runs once, after the batch.
        """
        from concurrent.futures import ThreadPoolExecutor

        from agent.backends.batching import BatchingChatModel

        items = [{"task": item} if isinstance(item, str) else dict(item) for item in tasks]
        if concurrency < 1:
            raise UserError("concurrency must be at least 1")
        if not items:
            return []

        def one(kwargs: dict[str, Any], model: ChatModel) -> RunResult:
            result: list[RunResult] = []
            task = kwargs.pop("task")
            for _ in self._execute(task, RunOptions.of(kwargs), model=model, result=result):
                pass
            return result[0]

        with (
            BatchingChatModel(self.model, max_batch=concurrency, max_wait_ms=max_wait_ms) as batching,
            ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="habitloop-run") as pool,
        ):
            futures = [pool.submit(one, dict(kwargs), batching) for kwargs in items]
            outcomes = [(future.result() if future.exception() is None else future.exception()) for future in futures]
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        results = [outcome for outcome in outcomes if isinstance(outcome, RunResult)]
        if results:
            self._last = results[-1]
            self._maybe_consolidate([s.name for s in results[-1].trajectory.skills])
        if errors:
            raise errors[0]
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
        """Rejection sampling (STaR-style, `agent.practice.rejection_sample`): up to `attempts` samples per task, one
        task at a time, each judged by `checker` and recorded; stop at the first success. The successes are what
        `consolidate()` trains on."""

        def sample(batch: list[str]) -> list[tuple[RunResult, bool]]:
            (task,) = batch  # one task at a time
            result = self.run(
                task, skills=skills, checker=checker, temperature=temperature, max_steps=max_steps, examples=0
            )
            return [(result, result.outcome.status == "success")]

        practiced = rejection_sample(tasks, sample, attempts=attempts)
        return [
            PracticeReport(
                task=p.item, attempts=len(p.samples), successes=int(p.solved), run_ids=[r.run_id for r in p.samples]
            )
            for p in practiced
        ]

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

    def consolidate(
        self, skill: str | None = None, *, min_episodes: int | None = None, facts: bool = False,
        recipe: ConsolidationConfig | None = None, episodes: Sequence[Trajectory] | None = None,
    ) -> list[ConsolidationReport]:  # fmt: skip
        """Train the buffer's unconsolidated successes into skills (a new revision each, gated against the current
        one) and let those episodes go from the retrieval pool. Needs the local model (the shared base).

        `facts=True` (a personal instance): what the user said instead, into their memory adapter (`skill`, default
        `memory`), with `memory.recipe.facts_recipe` unless this agent was given a recipe with a facts part. `recipe`
        replaces the agent's; `episodes` (recorded ones) are consolidated into `skill` as they are."""
        if self.residency is None or self.base is None:
            raise UserError("consolidation trains adapters on the local base; this agent has no local model")
        config = recipe or (self.consolidation if not facts or self.consolidation.facts else facts_recipe())
        if min_episodes is not None:
            config = config.model_copy(update={"min_episodes": min_episodes})
        store: Any = self.store
        if self.instance:  # an instance trains into its own store only, never into a shared skill
            store = PersonalView(self.personal_store(), self.instance)
            skill = None if skill is None else qualify(self.instance, store.bare(skill))
        self.forgetter().recover()  # a killed forget is finished before anything trains on what it was removing
        consolidator = Consolidator(
            self.buffer, store, self.residency, self.base.tokenizer, config=config,
            reports_dir=self.settings.reports_dir, instance=self.instance, **self._judges(),
        )  # fmt: skip
        if episodes is not None:
            return [consolidator.consolidate(skill, episodes)]
        if facts:
            name = MEMORY_SKILL if skill is None else store.bare(skill) if self.instance else skill
            report = consolidator.consolidate_facts(name)
            return [] if report is None else [report]
        return consolidator.run(skill)

    def forget(
        self, episodes: Sequence[str] = (), *, match: str | None = None, reason: str = "", dry_run: bool = False
    ) -> ForgetReport:
        """Forget this instance's episodes (by id, or all whose task or user messages contain `match`) from the buffer,
        their threads and every revision that holds them (rebuilt without them; docs/forgetting.md). `dry_run`: the
        plan, nothing written."""
        forgetter = self.forgetter()
        if dry_run:
            return ForgetReport.of_plan(forgetter.plan(episodes, match))
        return forgetter.forget(episodes, match, reason=reason)

    def _judges(self) -> dict[str, Any]:
        """How consolidation and a forget's rebuild judge text: the router's embedder, the agent's call parser."""
        embedder = self._router.embedder if self._router is not None else None
        return {"embedder": embedder, "is_tool_call": lambda text: bool(parse_tool_calls(text).calls)}

    def forgetter(self) -> Forgetter:
        """The forgetting pipeline on this agent's buffer, store (the instance's own, else the shared one) and model."""
        store = self.personal_store() if self.instance else self.store
        local = self.residency is not None and self.base is not None
        return Forgetter(
            self.buffer,
            store,
            retrainer=recipe_retrainer(store, self.residency, self.base.tokenizer, **self._judges()) if local else None,
            instance=self.instance,
            residency=self.residency,
            composer=getattr(self.model, "composer", None),
            caches=[self.settings.home / "cache" / "compositions"],
            threads=lambda ids: [self.checkpointer.delete_thread(self._thread_key(t)) for t in ids],
        )

    def recall(self, query: str, k: int = 3) -> list[tuple[str, str, float]]:
        """(task, answer, similarity) of the most similar successful episodes not yet consolidated."""
        with self._buffer_lock:
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

    def _resolve_skills(self, requested: Sequence[str | SkillRef]) -> list[SkillUse]:
        """Each requested skill at its current revision, or at the one pinned as `name@revision`."""
        uses = []
        for item in requested:
            ref = item if isinstance(item, SkillRef) else SkillRef.parse_one(item)
            name = self.skills.canonical(ref.qualified) if isinstance(self.skills, LayeredStore) else ref.qualified
            try:
                manifest = self.skills.get(name)
                revision = manifest.current if ref.revision is None else self.skills.revision(name, ref.revision).number
            except SkillNotFoundError as error:
                raise SkillNotFoundError(error.message, hint="see `habitloop skills list`") from error
            uses.append(SkillUse(name=name, revision=revision, reason="requested"))
        return uses

    def _record(self, trajectory: Trajectory) -> None:
        with self._buffer_lock:
            self._runs[trajectory.id] = trajectory
            self.buffer.add(trajectory)
            self.buffer.enforce_capacity(self.settings.buffer_max_unconsolidated, self.settings.buffer_max_age_days)
            if self.recorder is not None:
                self.recorder(trajectory)

    def _examples(self, task: str, k: int) -> list[tuple[str, list[dict[str, Any]]]]:
        if k <= 0:
            return []
        with self._buffer_lock:
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
