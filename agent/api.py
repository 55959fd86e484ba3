"""The Python API: `Agent(...)`, `agent.run / stream / run_batch / feedback`. The CLI is a thin layer over it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.config import Settings
from agent.graph import Checker, RunContext, build_graph
from agent.models import ChatModel, LocalChatModel
from memory.trajectory import Outcome, OutcomeStatus, SkillUse, Step, Trajectory, new_id
from skills.errors import SkillNotFoundError, UserError
from skills.store import SkillStore
from tools import Tool, ToolContext, ToolRegistry, builtin_tools


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


def sqlite_checkpointer(path: Path) -> Any:
    """LangGraph's SQLite saver on `path` (created if missing): threads survive the process."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteSaver(sqlite3.connect(str(path), check_same_thread=False))


class Agent:
    """An agent on the shared base: tools to act with, skills to act well, a checkpointer to remember threads.

    Defaults that just work: the base from `Settings` (loaded once, here), the skill store under
    `$HABITLOOP_HOME/skills`, the built-in tools (calculator, workspace files under `$HABITLOOP_HOME/workspace`),
    and SQLite checkpoints in `$HABITLOOP_HOME/state.sqlite`. Pass any of them in to replace it (tests pass
    `agent.testing.ScriptedChatModel()` as `model` and `langgraph.checkpoint.memory.InMemorySaver()`).
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
    ) -> None:
        self.settings = settings or Settings()
        if model is None:
            from agent.base import load_base
            from skills.residency import Residency

            base = base or load_base(settings=self.settings)
            store = store or SkillStore(self.settings.skills_dir, base_fingerprint=base.fingerprint)
            residency = Residency(base.model, store, max_hot=self.settings.max_hot, max_warm=self.settings.max_warm)
            model = LocalChatModel(base, residency)
        self.base = base
        self.model = model
        self.store = store or SkillStore(self.settings.skills_dir)
        self.workspace = workspace or self.settings.home / "workspace"
        self.tools = ToolRegistry()
        for item in builtin_tools() if tools is None else tools:
            self.tools.register(item)
        self.checkpointer = checkpointer or sqlite_checkpointer(self.settings.home / "state.sqlite")
        self.graph = build_graph(self.checkpointer)
        self.max_steps = max_steps
        self.max_new_tokens = max_new_tokens
        self.tool_timeout = tool_timeout
        self.recorder = recorder
        self._runs: dict[str, Trajectory] = {}

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
    ) -> RunResult:
        """Run one task to an outcome. The model's mistakes end up in the trajectory, never as exceptions here."""
        for _ in self.stream(
            task, skills=skills, checker=checker, thread_id=thread_id, max_steps=max_steps, temperature=temperature
        ):
            pass
        return self._last

    def stream(
        self,
        task: str,
        *,
        skills: Sequence[str] = (),
        checker: Checker | None = None,
        thread_id: str | None = None,
        max_steps: int | None = None,
        temperature: float = 0.0,
    ) -> Iterator[Step]:
        """Run one task, yielding each step (model text, tool call, tool result, refusal, final) as it happens.

        After the iterator is exhausted, `agent.last_result` holds the `RunResult`.
        """
        if not isinstance(task, str) or not task.strip():
            raise UserError("the task is empty", hint="pass the task as a non-empty string")
        run_id = new_id()
        thread_id = thread_id or run_id
        context = RunContext(
            model=self.model,
            tools=self.tools,
            skills=self._resolve_skills(skills),
            checker=checker,
            recorder=self._record,
            thread_id=thread_id,
            max_steps=max_steps or self.max_steps,
            max_new_tokens=self.max_new_tokens,
            temperature=temperature,
            tool_timeout=self.tool_timeout,
            tool_context=ToolContext(workspace=self.workspace, run_id=run_id),
        )
        config = {"configurable": {"thread_id": thread_id}, "recursion_limit": 4 * context.max_steps + 10}
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

    @property
    def last_result(self) -> RunResult:
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
        """Record a user's verdict on a finished run (it replaces the earlier outcome)."""
        if run_id not in self._runs:
            raise UserError(f"no run {run_id!r} in this agent", hint="pass the run_id of a RunResult from this agent")
        trajectory = self._runs[run_id].model_copy(
            update={"outcome": Outcome(status=status, score=score, judged_by="user", reason=reason)}
        )
        self._runs[run_id] = trajectory
        if self.recorder is not None:
            self.recorder(trajectory)
        return trajectory

    def thread(self, thread_id: str) -> list[dict[str, Any]]:
        """The conversation saved for a thread (empty when the thread is unknown)."""
        snapshot = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        return list(snapshot.values.get("messages", [])) if snapshot and snapshot.values else []

    # ------------------------------------------------------------------------------------------------- internals

    def _resolve_skills(self, names: Sequence[str]) -> list[SkillUse]:
        uses = []
        for name in names:
            try:
                manifest = self.store.get(name)
            except SkillNotFoundError as error:
                raise SkillNotFoundError(error.message, hint="see `habitloop skills list`") from error
            uses.append(SkillUse(name=name, revision=manifest.current, reason="requested"))
        return uses

    def _record(self, trajectory: Trajectory) -> None:
        self._runs[trajectory.id] = trajectory
        if self.recorder is not None:
            self.recorder(trajectory)


def load_tools(spec: str) -> list[Tool | Any]:
    """Import tools from `module:attr` (a tool, a function to wrap with @tool, a LangChain tool, or a list of them)."""
    import importlib

    from tools import tool as make_tool

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"--tools {spec!r} is not 'module:attr'", hint="e.g. --tools mypkg.tools:TOOLS")
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise UserError(f"cannot import tools from {spec!r}: {error}") from error
    items = value if isinstance(value, list | tuple) else [value]
    # Tools and LangChain tools have `invoke`; a plain typed function is wrapped with @tool.
    return [item if hasattr(item, "invoke") else make_tool(item) for item in items]
