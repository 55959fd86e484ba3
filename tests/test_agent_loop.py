"""The agent loop on the scripted fake model: every path the model can take, and threads that resume."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent import Agent, Settings
from agent.graph import build_graph
from agent.options import RunOptions
from agent.runtime import sqlite_checkpointer
from agent.testing import ScriptedChatModel
from memory import HashingEmbedder, InMemoryBuffer, Outcome, Trajectory
from skills import SkillNotFoundError, SkillRef, SkillStore, UserError
from tools import builtin_tools, tool


def call(name: str, **arguments: Any) -> str:
    import json

    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


@tool
def boom(x: int) -> str:
    """Always fails.

    Args:
        x: anything.
    """
    raise RuntimeError("kaboom")


@tool
def sleepy(seconds: float) -> str:
    """Sleeps.

    Args:
        seconds: how long.
    """
    time.sleep(seconds)
    return "awake"


def make_agent(tmp_path: Path, replies: Any, **kwargs: Any) -> Agent:
    settings = Settings(home=tmp_path / "home")
    kwargs.setdefault("checkpointer", InMemorySaver())
    kwargs.setdefault("tools", [*builtin_tools(memory=True), boom, sleepy])
    kwargs.setdefault("buffer", InMemoryBuffer(HashingEmbedder()))
    kwargs.setdefault("retrieval_k", 0)
    model = replies if isinstance(replies, ScriptedChatModel) else ScriptedChatModel(replies)
    return Agent(settings=settings, model=model, **kwargs)


def kinds(result: Any) -> list[str]:
    return [step.kind for step in result.steps]


def test_tool_call_then_answer(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [call("calculator", expression="17*23"), "17*23 is 391."])
    result = agent.run("What is 17*23?", checker=lambda task, answer, trajectory: "391" in (answer or ""))
    assert kinds(result) == ["model", "tool_call", "tool_result", "model", "final"]
    assert result.steps[2].text == "391" and result.steps[2].ok
    assert result.answer == "17*23 is 391."
    assert result.outcome.status == "success" and result.outcome.judged_by == "checker"
    # the model saw the tool's schema in the system prompt and the result as an observation
    second = agent.model.calls[1]
    assert second[0]["role"] == "system" and '"calculator"' in second[0]["content"]
    assert second[-1] == {"role": "tool", "content": "[calculator] 391"}
    assert result.trajectory.prompt_tokens > 0 and result.trajectory.completion_tokens > 0


def test_no_checker_means_unknown_outcome(tmp_path: Path) -> None:
    result = make_agent(tmp_path, ["Paris."]).run("Capital of France?")
    assert result.outcome.status == "unknown" and result.outcome.judged_by == "none"
    assert kinds(result) == ["model", "final"]


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ('<tool_call>{"name": "calculator", "arguments": {"expression": </tool_call>', "JSON"),
        (call("teleport", where="mars"), "teleport"),
        (call("calculator", expression=17), "expression"),
    ],
    ids=["invalid-json", "unknown-tool", "wrong-type"],
)
def test_model_mistakes_go_back_as_observations(tmp_path: Path, bad: str, expected: str) -> None:
    agent = make_agent(tmp_path, [bad, "Sorry, the answer is 391."])
    result = agent.run("What is 17*23?")
    refused = [step for step in result.steps if step.kind == "parse_error"]
    assert len(refused) == 1 and expected in refused[0].text
    observation = agent.model.calls[1][-1]
    assert observation["role"] == "tool" and "error" in observation["content"]
    assert result.answer == "Sorry, the answer is 391."


def test_tool_exception_and_timeout_are_observations(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [call("boom", x=1), call("sleepy", seconds=5), "done"], tool_timeout=0.3)
    started = time.perf_counter()
    result = agent.run("try things")
    assert time.perf_counter() - started < 4, "the hung tool must not hold the run"
    results = [step for step in result.steps if step.kind == "tool_result"]
    assert [step.ok for step in results] == [False, False]
    assert "kaboom" in results[0].text
    assert "timed out" in results[1].text
    assert result.answer == "done"


def test_max_steps_ends_in_a_failure_not_an_exception(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, lambda messages: call("calculator", expression="1+1"), max_steps=3)
    result = agent.run("loop forever")
    assert result.answer is None
    assert result.outcome.status == "failure" and result.outcome.judged_by == "max_steps"
    assert len(agent.model.calls) == 3
    assert kinds(result)[-1] == "final"


def test_checker_verdicts_and_a_broken_checker(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, lambda messages: "42")
    assert agent.run("q", checker=lambda *a: 0.2).outcome.status == "failure"
    assert agent.run("q", checker=lambda *a: Outcome(status="success", judged_by="tool")).outcome.judged_by == "tool"

    def broken(*args: Any) -> bool:
        raise ValueError("checker bug")

    outcome = agent.run("q", checker=broken).outcome
    assert outcome.status == "unknown" and "checker bug" in outcome.reason


def test_stream_yields_steps_as_they_happen(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [call("calculator", expression="2+3"), "5"])
    seen = []
    for step in agent.stream("2+3?"):
        seen.append(step.kind)
        if step.kind == "tool_call":
            assert len(agent.model.calls) == 1, "the call is streamed before the model is asked again"
    assert seen == ["model", "tool_call", "tool_result", "model", "final"]
    assert agent.last_result.answer == "5"


def test_threads_resume_by_id_across_agents(tmp_path: Path) -> None:
    """Two Agent objects on one SQLite file stand for two processes: the second continues the first's thread."""
    db = tmp_path / "state.sqlite"
    first = make_agent(tmp_path, ["Hi Ada."], checkpointer=sqlite_checkpointer(db))
    first.run("My name is Ada.", thread_id="t-1")
    second = make_agent(tmp_path, ["Your name is Ada."], checkpointer=sqlite_checkpointer(db))
    result = second.run("What is my name?", thread_id="t-1")
    conversation = second.model.calls[0]
    assert [m["content"] for m in conversation if m["role"] != "system"] == [
        "My name is Ada.",
        "Hi Ada.",
        "What is my name?",
    ]
    assert result.trajectory.thread_id == "t-1"
    assert [m["content"] for m in second.thread("t-1")][-1] == "Your name is Ada."
    assert second.thread("unknown-thread") == []


def test_skills_are_resolved_to_revisions_and_passed_to_the_model(tmp_path: Path, tiny: Any, adapter: Any) -> None:
    store = SkillStore(tmp_path / "home" / "skills", base_fingerprint=tiny.fingerprint)
    store.create("habit", adapter("alpha"), kind="tool_habit")
    store.add_revision("habit", adapter("beta"))
    agent = make_agent(tmp_path, ["ok", "ok"], store=store)
    result = agent.run("task", skills=["habit"])
    assert agent.model.skills_seen == [[("habit", 2)]]
    assert [(s.name, s.revision) for s in result.trajectory.skills] == [("habit", 2)]
    with pytest.raises(SkillNotFoundError, match="nope"):
        agent.run("task", skills=["nope"])
    pinned = agent.run("task", skills=[SkillRef("habit", 1)])  # a typed reference is taken as it is
    assert [(s.name, s.revision) for s in pinned.trajectory.skills] == [("habit", 1)]
    with pytest.raises(UserError, match="positive integer"):
        agent.run("task", skills=["habit@0"])


def test_feedback_replaces_the_outcome_and_reaches_the_recorder(tmp_path: Path) -> None:
    recorded = []
    agent = make_agent(tmp_path, ["an answer"], recorder=recorded.append)
    result = agent.run("task")
    assert recorded[-1].id == result.run_id and recorded[-1].outcome.status == "unknown"
    updated = agent.feedback(result.run_id, "success", reason="user liked it")
    assert updated.outcome.judged_by == "user" and recorded[-1].outcome.status == "success"
    with pytest.raises(UserError):
        agent.feedback("no-such-run", "failure")


def test_run_batch_and_empty_task(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, lambda messages: messages[-1]["content"].upper())
    results = agent.run_batch(["a", {"task": "b", "max_steps": 2}])
    assert [r.answer for r in results] == ["A", "B"]
    with pytest.raises(UserError, match="empty"):
        agent.run("   ")
    with pytest.raises(TypeError, match="skillz"):
        agent.run_batch([{"task": "c", "skillz": ["typo"]}])


def test_run_options_are_one_typed_model() -> None:
    options = RunOptions.of({"skills": ["a@2"], "max_steps": 2})
    assert options.skills == ("a@2",) and options.max_steps == 2 and options.temperature == 0.0
    with pytest.raises(TypeError, match="nope"):
        RunOptions.of({"nope": 1})


def test_messages_are_chat_messages_stored_as_plain_dicts(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [call("calculator", expression="2+2"), "4"])
    trajectory = agent.run("what is 2+2?").trajectory
    assert trajectory.messages[0] == {"role": "user", "content": "what is 2+2?"}
    assert all(type(m) is dict and set(m) == {"role", "content"} for m in trajectory.messages)
    typed = trajectory.chat_messages()
    assert [m.role for m in typed] == ["user", "assistant", "tool", "assistant"]
    assert [m.model_dump() for m in typed] == trajectory.messages, "the dump is the dict written before"
    assert Trajectory.model_validate_json(trajectory.model_dump_json()) == trajectory


def test_graph_shape_is_locked() -> None:
    drawing = build_graph().get_graph().draw_mermaid()
    edges = sorted(line.strip() for line in drawing.splitlines() if "-->" in line or "-.->" in line)
    assert edges == [
        "__start__ --> start;",
        "finish --> record;",
        "generate -.-> finish;",
        "generate -.-> generate;",
        "generate -.-> run_tools;",
        "record --> __end__;",
        "run_tools --> generate;",
        "select_skills --> generate;",
        "start --> select_skills;",
    ], drawing


def test_local_model_runs_the_loop_on_the_tiny_base_with_a_skill(tmp_path: Path, fresh_base: Any, adapter: Any) -> None:
    """The real generation path (tokenizer, chat template, peft adapter via Residency), on weights that babble."""
    store = SkillStore(tmp_path / "home" / "skills", base_fingerprint=fresh_base.fingerprint)
    store.create("habit", adapter("alpha"), kind="tool_habit")
    agent = Agent(
        settings=Settings(home=tmp_path / "home"),
        base=fresh_base,
        store=store,
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
        max_new_tokens=8,
        max_steps=2,
    )
    result = agent.run("What is 2+2?", skills=["habit"])
    assert result.trajectory.steps[0].kind == "model"
    assert result.trajectory.completion_tokens > 0 and result.trajectory.prompt_tokens > 20
    assert agent.model.residency.state("habit") == "hot"
    assert result.outcome.status in {"unknown", "failure"}


def test_every_run_is_recorded_and_successes_come_back_as_worked_examples(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, [call("calculator", expression="17*23"), "391", "the answer", "x"], retrieval_k=2)
    first = agent.run("What is 17*23?", checker=lambda *a: True)
    assert agent.buffer.get(first.run_id).outcome.status == "success"
    second = agent.run("What is 17*24?")
    shown = agent.model.calls[2]  # the third model call: the second task, with the first one as a worked example
    contents = [m["content"] for m in shown]
    assert contents[1:5] == ["What is 17*23?", call("calculator", expression="17*23"), "[calculator] 391", "391"]
    assert contents[-1] == "What is 17*24?"
    assert second.trajectory.examples == [first.run_id]
    assert agent.run("q", examples=0) and agent.model.calls[-1][1]["content"] == "q", "examples=0 shows none"


def test_recall_tool_searches_the_buffer(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, ["Paris.", call("recall", query="capital of France"), "Paris, as before."])
    agent.run("What is the capital of France?", checker=lambda *a: True)
    result = agent.run("Remind me: the capital of France?")
    observation = [s for s in result.steps if s.kind == "tool_result"][0]
    assert observation.ok and "capital of France" in observation.text and "Paris." in observation.text


def test_feedback_updates_the_buffer(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, ["an answer"])
    result = agent.run("task")
    agent.feedback(result.run_id, "failure", reason="wrong")
    stored = agent.buffer.get(result.run_id)
    assert stored.outcome.status == "failure" and stored.outcome.judged_by == "user"


def test_practice_samples_until_a_success_and_records_every_attempt(tmp_path: Path) -> None:
    replies = iter(["wrong", "wrong", "right", "right"])
    agent = make_agent(tmp_path, lambda messages: next(replies))
    reports = agent.practice(["t1", "t2"], lambda task, answer, trajectory: answer == "right", attempts=3)
    assert [(r.attempts, r.successes) for r in reports] == [(3, 1), (1, 1)]
    stats = agent.buffer.stats()
    assert stats.total == 4
    with pytest.raises(UserError):
        agent.practice(["t"], lambda *a: True, attempts=0)


def test_learn_from_records_a_demonstration_as_a_success(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, ["unused"])
    demo = Trajectory.demonstration(
        "What is 2+2?",
        [
            {"role": "assistant", "content": call("calculator", expression="2+2")},
            {"role": "tool", "content": "[calculator] 4"},
            {"role": "assistant", "content": "4"},
        ],
    )
    stored = agent.learn_from(demo)
    assert stored.outcome.status == "success" and stored.answer == "4"
    assert stored.system_prompt and "calculator" in stored.system_prompt, "the agent's own system prompt is kept"
    assert agent.buffer.get(demo.id).task == "What is 2+2?"


def test_auto_consolidation_runs_after_the_turn_for_stream_too(tmp_path: Path, fresh_base: Any) -> None:
    from memory.consolidate import ConsolidationConfig

    settings = Settings(home=tmp_path / "home", auto_consolidate_after=4)
    store = SkillStore(settings.skills_dir, base_fingerprint=fresh_base.fingerprint)
    agent = Agent(
        settings=settings,
        base=fresh_base,
        store=store,
        tools=[],
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
        retrieval_k=0,
        max_new_tokens=4,
        consolidation=ConsolidationConfig(replay=2, epochs=1.0, min_steps=2, max_steps=2, max_new_tokens=4),
    )
    with pytest.raises(UserError, match="no run has finished"):
        _ = agent.last_result
    for i in range(3):
        agent.learn_from(Trajectory.demonstration(f"ping number {i}", f"pong {i}"))
    assert store.list() == []
    steps = list(agent.stream("ping number 9", checker=lambda *a: True))  # the 4th success
    assert steps[-1].kind == "final"
    assert [m.name for m in store.list()] == ["number-ping"], "consolidated once the turn was over"
    assert agent.buffer.stats().unconsolidated_successes == 0


class BatchCounting(ScriptedChatModel):
    """Scripted replies; remembers how many requests each generate_batch call carried, and with which skills."""

    def __init__(self, replies: Any) -> None:
        super().__init__(replies)
        self.batches: list[list[list[tuple[str, int]]]] = []

    def generate_batch(self, requests: Any) -> Any:
        self.batches.append([list(r.skills) for r in requests])
        return super().generate_batch(requests)


def test_run_batch_meets_in_mixed_batches_and_keeps_order(tmp_path: Path, store: SkillStore, adapter: Any) -> None:
    def reply(messages: list[dict[str, Any]]) -> str:
        last = messages[-1]
        if last["role"] == "user":  # first turn: use the calculator on the task's own numbers
            a, b = last["content"].split("+")
            return call("calculator", expression=f"{a}+{b}")
        return "the answer is " + last["content"].rsplit("]", 1)[-1].strip()

    model = BatchCounting(reply)
    store.create("s1", adapter("alpha"), kind="style")
    store.create("s2", adapter("beta"), kind="style")
    agent = make_agent(tmp_path, model, store=store)
    tasks: list[str | dict[str, Any]] = [
        {"task": f"{i}+{i}", "skills": [f"s{i % 3}"] if i % 3 else []} for i in range(8)
    ]
    results = agent.run_batch(tasks, concurrency=8, max_wait_ms=200)
    assert [r.answer for r in results] == [f"the answer is {2 * i}" for i in range(8)]
    assert [r.trajectory.skills[0].name if r.trajectory.skills else None for r in results] == [
        f"s{i % 3}" if i % 3 else None for i in range(8)
    ]
    # 16 generations (a call, then the answer, per task) in far fewer batches, with different skills mixed
    assert sum(len(b) for b in model.batches) == 16
    assert len(model.batches) <= 6
    assert any(len({tuple(map(tuple, skills)) for skills in batch}) > 1 for batch in model.batches)


def test_run_batch_failure_stays_in_its_slot(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, lambda messages: "done")
    with pytest.raises(SkillNotFoundError):
        agent.run_batch(["a", {"task": "b", "skills": ["missing"]}, "c"])
    assert agent.last_result.answer == "done"  # the other runs finished and were recorded
    assert len(agent.buffer.list()) == 2
    assert agent.run_batch([]) == []


# ---------------------------------------------------------------------------------------------------------------
# Issue 16: text that is not valid Unicode never reaches a trajectory.


@tool
def surrogate_echo(kind: str) -> str:
    """Return or raise text with a lone surrogate, as os.fsdecode makes of a non-UTF-8 file name.

    Args:
        kind: "return" or "raise".
    """
    if kind == "raise":
        raise OSError("cannot open 'caf\udce9.txt'")
    return "caf\udce9.txt and \ud800"


def assert_serializable(result: Any) -> str:
    dumped = result.trajectory.model_dump_json()  # PydanticSerializationError before the fix
    assert Trajectory.model_validate_json(dumped) == result.trajectory
    return dumped


def test_a_non_utf8_file_name_in_the_workspace_does_not_lose_the_episode(tmp_path: Path) -> None:
    import os

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    try:
        (Path(os.fsdecode(bytes(workspace))) / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"x")
    except (OSError, UnicodeError):  # a file system that only takes Unicode names (macOS, Windows)
        pytest.skip("this file system refuses non-UTF-8 names")
    agent = make_agent(tmp_path, [call("workspace_list"), "one file"], workspace=workspace)
    result = agent.run("What is in the workspace?")
    assert result.answer == "one file"
    listed = [step for step in result.steps if step.kind == "tool_result"][0]
    assert listed.ok and listed.text == "caf\\xe9.txt"  # the byte the name holds, escaped
    assert r'"caf\\xe9.txt"' in assert_serializable(result)  # JSON doubles the backslash
    assert agent.buffer.get(result.run_id).answer == "one file"


def test_any_tools_invalid_text_is_made_valid_before_the_trajectory(tmp_path: Path) -> None:
    # a custom tool returning and raising lone surrogates; the model writing one as a JSON escape
    escaped = '<tool_call>{"name": "surrogate_echo", "arguments": {"kind": "return\\udcff"}}</tool_call>'
    replies = [call("surrogate_echo", kind="return"), call("surrogate_echo", kind="raise"), escaped, "done"]
    agent = make_agent(tmp_path, replies, tools=[surrogate_echo])
    result = agent.run("echo")
    results = [step.text for step in result.steps if step.kind == "tool_result"]
    assert results[0] == results[2] == "caf\\xe9.txt and \\ud800"
    assert "caf\\xe9.txt" in results[1]
    calls = [step.arguments for step in result.steps if step.kind == "tool_call"]
    assert calls[2] == {"kind": "return\\xff"}
    assert_serializable(result)
    assert result.answer == "done"
