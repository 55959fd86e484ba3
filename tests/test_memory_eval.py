"""BFCL memory: the data (from the real bfcl-eval wheel), playing the conversations, the five modes' prompts, the
control, isolation, the report and the CLI, on scripted models and the tiny base. Only DEV scenarios are used."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

import agent.cli.memory as cli_memory
from agent import Agent, Settings
from agent.backends.protocol import ChatRequest, fit_context
from agent.cli.app import app
from agent.evals.bfcl.data import WHEEL_ENV, find_wheel
from agent.evals.memory.data import (
    DEV_SCENARIOS,
    FINAL_SCENARIOS,
    SCENARIOS,
    Conversation,
    MemoryQuestion,
    load_conversations,
    load_questions,
    source_conversations,
)
from agent.evals.memory.harness import MODES, control_pairing, evaluate_memory
from agent.evals.memory.isolation import leak_matrix
from agent.evals.memory.play import play_conversations
from agent.evals.memory.report import markdown_table, write_memory_report
from agent.prompt import memory_notes
from agent.runtime import local_runtime
from agent.testing import ScriptedChatModel
from memory import HashingEmbedder, InMemoryBuffer
from skills import OperatorError, SkillStore, UserError
from skills.instances import LayeredStore, instance_store

# ------------------------------------------------------------------------------------------------ hand-made users

NOTES = [
    Conversation(id="n-0", topic="work", scenario="notetaker", turns=["Monday: budget report due Friday.",
                 "Tuesday: the printer on floor three is broken."]),
    Conversation(id="n-1", topic="home", scenario="notetaker", turns=["Shopping: buy glue sticks and crayons."]),
]  # fmt: skip
CUSTOMER = [
    Conversation(id="c-0", topic="order", scenario="customer", turns=["My name is Michael, I live in Seattle."])
]


def _question(i: int, scenario: str, question: str, answer: str) -> MemoryQuestion:
    return MemoryQuestion(id=f"q{i}-{scenario}", scenario=scenario, question=question, answers=[answer], source="")


NOTE_QUESTIONS = [
    _question(0, "notetaker", "When is the budget report due?", "Friday"),
    _question(1, "notetaker", "What is broken?", "printer"),
    _question(2, "notetaker", "What should I buy?", "glue sticks"),
]
CUSTOMER_QUESTIONS = [
    _question(0, "customer", "What is my first name?", "Michael"),
    _question(1, "customer", "Where do I live?", "Seattle"),
]


@pytest.fixture
def shared(tmp_path: Path, store: SkillStore) -> dict[str, Any]:
    """One buffer, one checkpointer and one store for every user (the isolation between them is what is tested)."""
    return {"buffer": InMemoryBuffer(HashingEmbedder()), "saver": InMemorySaver(), "store": store, "home": tmp_path}


def user_agent(shared: dict[str, Any], instance: str, model: Any) -> Agent:
    return Agent(
        settings=Settings(home=shared["home"]),
        instance=instance,
        model=model,
        store=shared["store"],
        buffer=shared["buffer"],
        checkpointer=shared["saver"],
        tools=[],
    )


def give_memory_adapter(shared: dict[str, Any], user: str, folder: Path) -> None:
    """A personal skill `<user>/memory` in the user's own store, as consolidation would leave it."""
    fingerprint = shared["store"].base_fingerprint
    instance_store(shared["home"] / "instances", user, base_fingerprint=fingerprint).create(
        "memory", folder, kind="memory"
    )


def system_of(conversation: list[dict[str, Any]]) -> str:
    return next((str(m["content"]) for m in conversation if m["role"] == "system"), "")


# ------------------------------------------------------------------------------------------------ data (real wheel)


@pytest.fixture
def wheel_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home: the data is extracted into it from the real wheel (found in the default home)."""
    monkeypatch.delenv(WHEEL_ENV, raising=False)
    try:
        find_wheel(tmp_path, download=False)
    except OperatorError:
        pytest.skip("the bfcl-eval wheel is not in ~/.habitloop/bfcl (make setup puts it there)")
    return tmp_path / "home"


def test_the_dev_scenarios_load_from_the_real_wheel(wheel_home: Path) -> None:
    assert set(DEV_SCENARIOS) | set(FINAL_SCENARIOS) == set(SCENARIOS) and not set(DEV_SCENARIOS) & set(FINAL_SCENARIOS)
    conversations = load_conversations(wheel_home, "notetaker")
    questions = load_questions(wheel_home, "notetaker")
    assert (len(conversations), sum(len(c.turns) for c in conversations), len(questions)) == (5, 24, 25)
    assert all(c.scenario == "notetaker" and all(c.turns) for c in conversations)
    assert conversations[0].turns[0].startswith("Monday: Team meeting ran over")
    assert all(q.scenario == "notetaker" and q.answers and q.question for q in questions)
    # every notetaker answer comes from exactly one conversation
    assert all(len(source_conversations(q, conversations)) == 1 for q in questions)
    assert [len(load_questions(wheel_home, s)) for s in ("customer", "finance")] == [30, 25]
    assert len(load_questions(wheel_home, "notetaker", limit=3)) == 3
    with pytest.raises(UserError, match="unknown memory scenario"):
        load_questions(wheel_home, "alice")


# ------------------------------------------------------------------------------------------------ play


def test_playing_records_each_turn_on_its_thread_and_a_rerun_continues(shared: dict[str, Any]) -> None:
    model = ScriptedChatModel(lambda conversation: "Noted.")
    agent = user_agent(shared, "notetaker", model)
    report = play_conversations(agent, NOTES, progress=False)
    assert (report.turns_played, report.turns_skipped, report.conversations) == (3, 0, 2)
    recorded = shared["buffer"].list(instance="notetaker")
    assert sorted((t.thread_id, t.task) for t in recorded) == sorted((c.id, t) for c in NOTES for t in c.turns)
    assert all(t.system_prompt is None and not t.examples for t in recorded)  # no tools, no worked examples
    # the second turn of a conversation sees the first (one thread per conversation)
    assert [m["content"] for m in model.calls[1] if m["role"] == "user"] == NOTES[0].turns
    assert agent.max_new_tokens == 256  # the play's short budget was only for the play
    again = play_conversations(agent, NOTES, progress=False)
    assert (again.turns_played, again.turns_skipped) == (0, 3) and len(model.calls) == 3
    # a crash after the first turn of n-0: the rerun tells the rest only
    last = next(t for t in recorded if t.task == NOTES[0].turns[1])
    shared["buffer"].discard([last.id])
    resumed = play_conversations(agent, NOTES, progress=False)
    assert (resumed.turns_played, resumed.turns_skipped) == (1, 2)
    assert model.calls[-1][-1]["content"] == NOTES[0].turns[1]


# ------------------------------------------------------------------------------------------------ modes


def _played(shared: dict[str, Any]) -> dict[str, tuple[Agent, ScriptedChatModel]]:
    users = {}
    for user, conversations in (("notetaker", NOTES), ("customer", CUSTOMER)):
        model = ScriptedChatModel(lambda conversation: "I think so.")
        users[user] = (user_agent(shared, user, model), model)
        play_conversations(users[user][0], conversations, progress=False)
    return users


def test_each_mode_shows_the_model_what_it_promises_and_records_nothing(shared: dict[str, Any], adapter: Any) -> None:
    users = _played(shared)
    agent, model = users["notetaker"]
    give_memory_adapter(shared, "notetaker", adapter("alpha"))
    before = len(shared["buffer"])
    prompts = {}
    for mode in MODES:
        model.calls.clear()
        model.skills_seen.clear()
        report = evaluate_memory(agent, "notetaker", mode, questions=NOTE_QUESTIONS, k=2)
        assert report.n == 3 and not report.skipped and len(report.answers) == 3
        prompts[mode] = (model.calls[0], model.skills_seen[0])
    assert len(shared["buffer"]) == before, "a question reached the buffer"
    assert agent.thread("q0-notetaker") == []
    question = {"role": "user", "content": "When is the budget report due?"}
    assert prompts["base"] == ([question], [])
    assert prompts["weights"] == ([question], [("notetaker/memory", 1)])
    every_turn = [t for c in NOTES for t in c.turns]
    assert prompts["context"] == ([{"role": "system", "content": memory_notes(every_turn)}, question], [])
    for mode in ("retrieval", "weights+retrieval"):
        messages, skills = prompts[mode]
        assert messages[-1] == question and len(messages) == 2
        notes = system_of(messages)
        assert notes.count("\n- ") == 2  # k=2 turns
        assert "Monday: budget report due Friday." in notes and "Michael" not in notes
    assert prompts["weights+retrieval"][1] == [("notetaker/memory", 1)]


def test_retrieval_only_ever_shows_the_users_own_turns(shared: dict[str, Any]) -> None:
    users = _played(shared)
    agent, model = users["customer"]
    evaluate_memory(agent, "customer", "retrieval", questions=CUSTOMER_QUESTIONS, k=4)
    for conversation in model.calls[-2:]:
        notes = system_of(conversation)
        assert "Michael" in notes
        assert not any(turn in notes for c in NOTES for turn in c.turns)


def test_a_mode_without_what_it_needs_fails_with_the_fix(shared: dict[str, Any]) -> None:
    agent = user_agent(shared, "notetaker", ScriptedChatModel(["never asked"]))
    with pytest.raises(UserError, match="no memory adapter") as error:
        evaluate_memory(agent, "notetaker", "weights", questions=NOTE_QUESTIONS)
    assert error.value.hint and "habitloop practice memory --scenario notetaker" in error.value.hint
    assert "habitloop consolidate --instance notetaker --facts" in error.value.hint
    with pytest.raises(UserError, match="told the agent nothing"):
        evaluate_memory(agent, "notetaker", "retrieval", questions=NOTE_QUESTIONS)
    with pytest.raises(UserError, match="not the scenario's user"):
        evaluate_memory(agent, "customer", "base", questions=CUSTOMER_QUESTIONS)
    with pytest.raises(UserError, match="unknown memory mode"):
        evaluate_memory(agent, "notetaker", "telepathy", questions=NOTE_QUESTIONS)


@dataclass
class ShortContext(ScriptedChatModel):
    """A scripted model with a context window counted in words, fitted as the local model fits."""

    context: int = 40

    def fit(self, request: ChatRequest, *, strict: bool = False) -> ChatRequest:
        words = sum(len(str(m["content"]).split()) for m in request.messages)
        return request.fitted(
            fit_context(words, request.max_new_tokens, self.context, strict=strict), prompt_tokens=words
        )


def test_context_mode_is_skipped_when_the_conversation_does_not_fit(shared: dict[str, Any]) -> None:
    _played(shared)
    small = ShortContext(lambda conversation: "Friday", context=40)  # 20 words of notes + a question + 48 tokens
    report = evaluate_memory(user_agent(shared, "notetaker", small), "notetaker", "context", questions=NOTE_QUESTIONS)
    assert report.skipped and "does not fit" in report.reason and report.n == 0 and small.calls == []
    assert "skipped" in markdown_table([report])
    roomy = ShortContext(lambda conversation: "Friday", context=200)
    report = evaluate_memory(user_agent(shared, "notetaker", roomy), "notetaker", "context", questions=NOTE_QUESTIONS)
    assert not report.skipped and report.n == 3 and report.accuracy == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------ control


@given(n=st.integers(2, 60), scenario=st.sampled_from(DEV_SCENARIOS))
def test_the_control_pairing_is_a_fixed_derangement(n: int, scenario: str) -> None:
    questions = [_question(i, scenario, f"q{i}?", f"a{i}") for i in range(n)]
    pairing = control_pairing(questions, scenario)
    assert sorted(pairing) == sorted(pairing.values()) == sorted(q.id for q in questions)
    assert all(question != control for question, control in pairing.items())
    assert pairing == control_pairing(questions, scenario)


def test_the_control_judges_each_answer_by_another_questions_answers(shared: dict[str, Any]) -> None:
    pairing = control_pairing(NOTE_QUESTIONS, "notetaker")
    answers = {q.question: q.answers[0] for q in NOTE_QUESTIONS}
    control_answer = {
        q.question: next(c.answers[0] for c in NOTE_QUESTIONS if c.id == pairing[q.id]) for q in NOTE_QUESTIONS
    }
    agent = user_agent(shared, "notetaker", ScriptedChatModel(lambda c: f"It is {control_answer[c[-1]['content']]}."))
    report = evaluate_memory(agent, "notetaker", "base", questions=NOTE_QUESTIONS)
    assert (report.accuracy, report.control_accuracy) == (0.0, 1.0)
    assert [a.control_id for a in report.answers] == [pairing[q.id] for q in NOTE_QUESTIONS]
    right = user_agent(shared, "notetaker", ScriptedChatModel(lambda c: f"It is {answers[c[-1]['content']]}."))
    short = evaluate_memory(right, "notetaker", "base", questions=NOTE_QUESTIONS, limit=2)
    assert (short.n, short.accuracy, short.control_accuracy) == (2, 1.0, 0.0)
    assert [a.control_id for a in short.answers] == [pairing[q.id] for q in NOTE_QUESTIONS[:2]]  # same pairs


# ------------------------------------------------------------------------------------------------ isolation


def test_the_leak_matrix_tells_an_adapter_that_carries_its_owner_from_chance(
    shared: dict[str, Any], adapter: Any
) -> None:
    for user in ("notetaker", "customer"):
        give_memory_adapter(shared, user, adapter("alpha"))
    secrets = {"notetaker/memory": "Friday", "customer/memory": "Michael"}
    model = ScriptedChatModel(lambda c: secrets[model.skills_seen[-1][0][0]] if model.skills_seen[-1] else "No idea.")
    view = LayeredStore(shared["store"], shared["home"] / "instances")
    cells = leak_matrix(model, view, {"notetaker": NOTE_QUESTIONS, "customer": CUSTOMER_QUESTIONS})
    by_pair = {(c.asker, c.owner): c for c in cells}
    assert set(by_pair) == {("notetaker", "customer"), ("customer", "notetaker")}
    assert by_pair[("notetaker", "customer")].leak_rate == 1.0  # Michael, to the notetaker
    assert by_pair[("customer", "notetaker")].leak_rate == 1.0
    assert all(c.base_leak_rate == 0.0 and c.skill.endswith("/memory@1") for c in cells)
    with pytest.raises(UserError, match="no memory adapter"):
        leak_matrix(model, view, {"notetaker": NOTE_QUESTIONS, "finance": CUSTOMER_QUESTIONS})


def test_weights_mode_runs_the_users_adapter_on_the_tiny_base(tmp_path: Path, fresh_base: Any, adapter: Any) -> None:
    """The real local model: `<user>/memory` resolved through the user's view, loaded by the residency, batched."""
    store = SkillStore(tmp_path / "skills", base_fingerprint=fresh_base.fingerprint)
    settings = Settings(home=tmp_path)
    runtime = local_runtime(settings, base=fresh_base, store=store, instances_dir=settings.instances_dir)
    shared = {"buffer": InMemoryBuffer(HashingEmbedder()), "saver": InMemorySaver(), "store": store, "home": tmp_path}
    give_memory_adapter(shared, "notetaker", adapter("alpha"))
    agent = Agent(settings=settings, instance="notetaker", base=fresh_base, model=runtime.model, store=store,
                  buffer=shared["buffer"], checkpointer=shared["saver"], tools=[])  # fmt: skip
    base = evaluate_memory(agent, "notetaker", "base", questions=NOTE_QUESTIONS, max_new_tokens=4, batch=2)
    weights = evaluate_memory(agent, "notetaker", "weights", questions=NOTE_QUESTIONS, max_new_tokens=4, batch=2)
    assert weights.skill == "notetaker/memory@1" and weights.n == 3
    assert ("notetaker/memory", 1) in runtime.residency.hot()
    assert all(0 < a.answer_tokens <= 4 and a.prompt_tokens > 0 for a in [*base.answers, *weights.answers])
    assert [a.prompt_tokens for a in base.answers] == [a.prompt_tokens for a in weights.answers]  # the same prompt
    assert len(shared["buffer"]) == 0
    played = play_conversations(agent, NOTES, progress=False)
    assert played.turns_played == 3 and len(shared["buffer"]) == 3
    context = evaluate_memory(agent, "notetaker", "context", questions=NOTE_QUESTIONS, max_new_tokens=4, batch=2)
    both = evaluate_memory(agent, "notetaker", "weights+retrieval", questions=NOTE_QUESTIONS, k=1, max_new_tokens=4)
    assert not context.skipped and context.n == both.n == 3  # the tiny base has SmolLM2's context: it fits
    assert context.prompt_tokens_mean > both.prompt_tokens_mean > base.prompt_tokens_mean
    assert len(shared["buffer"]) == 3


# ------------------------------------------------------------------------------------------------ report


def test_the_report_is_json_a_plot_and_a_table(shared: dict[str, Any], tmp_path: Path) -> None:
    agent = user_agent(shared, "notetaker", ScriptedChatModel(lambda c: "Friday"))
    reports = [evaluate_memory(agent, "notetaker", "base", questions=NOTE_QUESTIONS)]
    files = write_memory_report(reports, tmp_path / "reports")
    payload = json.loads(Path(files.json_path).read_text())
    assert payload["rows"][0]["mode"] == "base" and payload["rows"][0]["n"] == 3 and "answers" not in payload["rows"][0]
    assert files.png_path and Path(files.png_path).stat().st_size > 0
    table = markdown_table(reports)
    assert table.splitlines()[0] == "| scenario | mode | n | accuracy | control | prompt tok | answer tok | s/q |"
    assert "| notetaker | base | 3 | 33.3% |" in table


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli_users(wheel_home: Path, monkeypatch: pytest.MonkeyPatch, store: SkillStore) -> dict[str, Any]:
    """The CLI's agents are scripted users sharing one buffer; the data is the real notetaker scenario."""
    home = wheel_home
    shared = {"buffer": InMemoryBuffer(HashingEmbedder()), "saver": InMemorySaver(), "store": store, "home": home}

    def factory(settings: Settings, instance: str, like: Any = None) -> Agent:
        return user_agent(shared, instance, ScriptedChatModel(lambda c: "Noted: the budget report, Friday."))

    monkeypatch.setattr(cli_memory, "make_agent", factory)
    monkeypatch.setenv("HABITLOOP_HOME", str(home))
    return shared


def test_cli_practice_then_eval_memory_json(cli_users: dict[str, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["practice", "memory", "--scenario", "notetaker", "--json"])
    assert result.exit_code == 0, result.output
    (play,) = json.loads(result.stdout)["plays"]
    assert (play["instance"], play["turns_played"], play["turns_skipped"]) == ("notetaker", 24, 0)
    out = tmp_path / "answers.jsonl"
    args = [
        "eval",
        "memory",
        "--scenario",
        "notetaker",
        "--mode",
        "retrieval",
        "--limit",
        "3",
        "--json",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    (row,) = payload["rows"]
    assert {"scenario", "mode", "n", "accuracy", "control_accuracy", "prompt_tokens_mean", "answer_tokens_mean",
            "seconds_per_question", "skipped", "reason"} <= set(row)  # fmt: skip
    assert (row["scenario"], row["mode"], row["n"], row["k"]) == ("notetaker", "retrieval", 3, 4)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and {"id", "answer", "correct", "control_correct", "prompt_tokens"} <= set(lines[0])
    assert Path(payload["json_path"]).is_file() and Path(payload["json_path"]).parent.name == "reports"
    assert len(cli_users["buffer"]) == 24  # the questions left no trace


def test_cli_eval_memory_refuses_a_missing_adapter_before_asking(cli_users: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["eval", "memory", "--scenario", "notetaker", "--mode", "weights"])
    assert isinstance(result.exception, UserError) and "no memory adapter" in result.exception.message
    result = CliRunner().invoke(app, ["eval", "memory", "--scenario", "notetaker", "--mode", "base", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "| notetaker | base | 2 |" in result.stdout
    assert "--final" in CliRunner().invoke(app, ["eval", "memory", "--help"]).stdout


def test_cli_isolation_asks_every_user_with_every_other_users_adapter(cli_users: dict[str, Any], adapter: Any) -> None:
    for user in DEV_SCENARIOS:
        give_memory_adapter(cli_users, user, adapter("alpha"))
    args = ["eval", "memory", "--scenario", "all", "--limit", "2", "--isolation", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [(r["scenario"], r["mode"]) for r in payload["rows"]] == [(s, "base") for s in DEV_SCENARIOS]
    pairs = {(c["asker"], c["owner"]) for c in payload["isolation"]}
    assert pairs == {(a, o) for a in DEV_SCENARIOS for o in DEV_SCENARIOS if a != o}
    assert all(c["n"] == 2 and c["leak_rate"] == c["base_leak_rate"] for c in payload["isolation"])
    result = CliRunner().invoke(app, ["eval", "memory", "--scenario", "notetaker", "--isolation"])
    assert isinstance(result.exception, UserError) and "two users" in result.exception.message
