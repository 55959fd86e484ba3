"""The agent loop as a LangGraph graph, built by one factory; each node is a small function returning partial state.

    START -> start -> select_skills -> generate --(calls or refused calls, steps left)--> run_tools -> generate ...
                                               \\--(a plain answer, or no steps left)--> finish -> record -> END

Resources (the chat model, the tools, the skill store, the checker, the recorder) travel in the run's `context`
(LangGraph's `Runtime`, never checkpointed); the state holds only JSON-able data, so any checkpointer can save it and
a thread resumes by id. Everything the model gets wrong (unparseable text, unknown tools, bad arguments, a tool that
raises or hangs, never stopping) becomes an observation or an outcome in the trajectory, never an exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agent.backends.protocol import ChatModel
from agent.prompt import system_prompt, tool_result_message
from memory.trajectory import Outcome, SkillUse, Step, Trajectory
from skills.messages import ChatMessage
from tools import ToolContext, ToolRegistry, parse_tool_calls, validate_call
from tools.calls import ToolCall

Checker = Callable[[str, str | None, Trajectory], bool | float | Outcome | None]


class AgentState(TypedDict, total=False):
    """What the checkpointer saves per thread. `messages` spans every run on the thread; the rest is this run's."""

    run_id: str
    task: str
    messages: list[dict[str, Any]]  # ChatMessage.model_dump() each: plain dicts, as threads were always saved
    skills: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    pending: list[dict[str, Any]]
    turn: int
    answer: str | None
    outcome: dict[str, Any] | None
    prompt_tokens: int
    completion_tokens: int
    started_at: str
    run_start: int
    trajectory: dict[str, Any] | None


@dataclass
class RunContext:
    """Run-scoped resources, handed to every node by LangGraph (not saved in checkpoints)."""

    model: ChatModel
    tools: ToolRegistry
    skills: Sequence[SkillUse] = ()
    router: Callable[[str], Sequence[SkillUse]] | None = None  # chooses skills when `skills` is empty
    examples: Sequence[tuple[str, list[dict[str, Any]]]] = ()  # (episode id, its messages): retrieval mode
    checker: Checker | None = None
    recorder: Callable[[Trajectory], None] | None = None
    thread_id: str = ""
    instance: str | None = None
    max_steps: int = 6
    max_new_tokens: int = 256
    temperature: float = 0.0
    tool_timeout: float | None = 30.0
    tool_context: ToolContext = field(default_factory=ToolContext)


def _step(state: AgentState, kind: str, **fields: Any) -> dict[str, Any]:
    return Step(index=len(state.get("steps", [])), kind=kind, **fields).model_dump(mode="json")


def _emit(runtime: Runtime[RunContext], step: dict[str, Any]) -> None:
    """Stream a step to `agent.stream()` callers as it happens (LangGraph's custom stream mode)."""
    try:
        runtime.stream_writer(step)
    except Exception:  # no stream consumer (plain invoke): nothing to do
        pass


# ----------------------------------------------------------------------------------------------------------- nodes


def start(state: AgentState) -> AgentState:
    """Open a run: add the task to the thread's conversation and reset this run's fields."""
    previous = state.get("messages", [])
    return {
        "messages": [*previous, ChatMessage.user(state["task"]).model_dump()],
        "run_start": len(previous),
        "steps": [],
        "pending": [],
        "turn": 0,
        "answer": None,
        "outcome": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "started_at": datetime.now(UTC).isoformat(),
        "trajectory": None,
    }


def select_skills(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
    """The skills for this run: those the caller named, else the router's choice (each with score and threshold)."""
    ctx = runtime.context
    uses = ctx.skills if ctx.skills or ctx.router is None else ctx.router(state["task"])
    return {"skills": [skill.model_dump(mode="json") for skill in uses]}


def generate(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
    """Ask the model for the next message; parse and validate any tool calls in it."""
    ctx = runtime.context
    system = system_prompt(ctx.tools.schemas())
    shown = [message for _, example in ctx.examples for message in example]  # worked examples, before the thread
    conversation = ([ChatMessage.system(system).model_dump()] if system else []) + shown + state["messages"]
    started = time.perf_counter()
    reply = ctx.model.generate(
        conversation,
        skills=[(s["name"], s["revision"]) for s in state.get("skills", [])],
        max_new_tokens=ctx.max_new_tokens,
        temperature=ctx.temperature,
    )
    steps = list(state.get("steps", []))
    messages = [*state["messages"], ChatMessage.assistant(reply.text).model_dump()]
    model_step = _step({"steps": steps}, "model", text=reply.text, seconds=time.perf_counter() - started)
    steps.append(model_step)
    _emit(runtime, model_step)

    parsed = parse_tool_calls(reply.text, tool_names=ctx.tools.names())
    pending: list[dict[str, Any]] = []
    for call in parsed.calls:
        checked = validate_call(call, ctx.tools)
        if isinstance(checked, ToolCall):
            pending.append(checked.model_dump(mode="json"))
        else:  # unknown tool or bad arguments: the model must fix it
            refused = _step({"steps": steps}, "parse_error", text=checked.reason, tool=call.name, ok=False)
            steps.append(refused)
            messages.append(tool_result_message(call.name, checked.reason, ok=False))
            _emit(runtime, refused)
    for error in parsed.errors:
        refused = _step({"steps": steps}, "parse_error", text=error.reason, ok=False)
        steps.append(refused)
        messages.append(tool_result_message("parser", error.reason, ok=False))
        _emit(runtime, refused)
    needs_fix = bool(parsed.calls or parsed.errors)
    return {
        "messages": messages,
        "steps": steps,
        "pending": pending,
        "turn": state.get("turn", 0) + 1,
        "answer": None if needs_fix else reply.text,
        "prompt_tokens": state.get("prompt_tokens", 0) + reply.prompt_tokens,
        "completion_tokens": state.get("completion_tokens", 0) + reply.completion_tokens,
    }


def after_generate(state: AgentState, runtime: Runtime[RunContext]) -> Literal["run_tools", "generate", "finish"]:
    if state.get("answer") is not None or state.get("turn", 0) >= runtime.context.max_steps:
        return "finish"
    return "run_tools" if state.get("pending") else "generate"


def run_tools(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
    """Run the validated calls in order; each result (or error, or time-out) becomes an observation."""
    ctx = runtime.context
    steps = list(state.get("steps", []))
    messages = list(state["messages"])
    for call in state.get("pending", []):
        call_step = _step({"steps": steps}, "tool_call", tool=call["name"], arguments=call["arguments"])
        steps.append(call_step)
        _emit(runtime, call_step)
        result = ctx.tools.get(call["name"]).invoke(call["arguments"], ctx=ctx.tool_context, timeout=ctx.tool_timeout)
        text = result.output if result.ok else (result.error or "failed")
        result_step = _step(
            {"steps": steps}, "tool_result", tool=call["name"], text=text, ok=result.ok, seconds=result.seconds
        )
        steps.append(result_step)
        messages.append(tool_result_message(call["name"], text, ok=result.ok))
        _emit(runtime, result_step)
    return {"messages": messages, "steps": steps, "pending": []}


def _trajectory(state: AgentState, ctx: RunContext, outcome: Outcome) -> Trajectory:
    return Trajectory(
        id=state["run_id"],
        thread_id=ctx.thread_id,
        task=state["task"],
        instance=ctx.instance,
        messages=state["messages"],
        context_messages=state.get("run_start", 0),
        system_prompt=system_prompt(ctx.tools.schemas()),
        examples=[episode_id for episode_id, _ in ctx.examples],
        steps=[Step.model_validate(s) for s in state.get("steps", [])],
        skills=[SkillUse.model_validate(s) for s in state.get("skills", [])],
        answer=state.get("answer"),
        outcome=outcome,
        prompt_tokens=state.get("prompt_tokens", 0),
        completion_tokens=state.get("completion_tokens", 0),
        started_at=datetime.fromisoformat(state["started_at"]),
        finished_at=datetime.now(UTC),
    )


def judge(checker: Checker | None, trajectory: Trajectory) -> Outcome:
    """Turn a checker's verdict (bool, score in [0, 1], or an Outcome) into an Outcome; its exceptions too."""
    if trajectory.answer is None:
        return Outcome(status="failure", judged_by="max_steps", reason="no final answer within max_steps")
    if checker is None:
        return Outcome(status="unknown", judged_by="none", reason="no checker")
    try:
        verdict = checker(trajectory.task, trajectory.answer, trajectory)
    except Exception as error:  # a broken checker must not lose the run
        return Outcome(status="unknown", judged_by="checker", reason=f"checker raised {type(error).__name__}: {error}")
    if isinstance(verdict, Outcome):
        return verdict
    if isinstance(verdict, bool):
        return Outcome(status="success" if verdict else "failure", score=float(verdict), judged_by="checker")
    if isinstance(verdict, int | float):
        score = max(0.0, min(1.0, float(verdict)))
        return Outcome(status="success" if score >= 0.5 else "failure", score=score, judged_by="checker")
    return Outcome(status="unknown", judged_by="checker", reason="checker returned no verdict")


def finish(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
    """Judge the run: the checker if there is one; running out of steps is a failure."""
    draft = _trajectory(state, runtime.context, Outcome())
    outcome = judge(runtime.context.checker, draft)
    final = _step(state, "final", text=state.get("answer") or outcome.reason, ok=outcome.status == "success")
    _emit(runtime, final)
    return {"outcome": outcome.model_dump(mode="json"), "steps": [*state.get("steps", []), final]}


def record(state: AgentState, runtime: Runtime[RunContext]) -> AgentState:
    """Build the trajectory and hand it to the recorder (the episode buffer)."""
    trajectory = _trajectory(state, runtime.context, Outcome.model_validate(state["outcome"]))
    if runtime.context.recorder is not None:
        runtime.context.recorder(trajectory)
    return {"trajectory": trajectory.model_dump(mode="json")}


def build_graph(checkpointer: Any = None) -> Any:
    """The compiled agent graph. `checkpointer`: any LangGraph saver (SQLite by default in `Agent`)."""
    graph = StateGraph(AgentState, context_schema=RunContext)
    graph.add_node("start", start)
    graph.add_node("select_skills", select_skills)
    graph.add_node("generate", generate)
    graph.add_node("run_tools", run_tools)
    graph.add_node("finish", finish)
    graph.add_node("record", record)
    graph.add_edge(START, "start")
    graph.add_edge("start", "select_skills")
    graph.add_edge("select_skills", "generate")
    graph.add_conditional_edges("generate", after_generate, ["run_tools", "generate", "finish"])
    graph.add_edge("run_tools", "generate")
    graph.add_edge("finish", "record")
    graph.add_edge("record", END)
    return graph.compile(checkpointer=checkpointer)
