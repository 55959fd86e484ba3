"""BFCL's irrelevance category (no offered function fits; right when nothing is called), from a hand-made wheel."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

import agent.cli.bfcl as cli_bfcl
from agent import Agent, Settings
from agent.cli.app import app
from agent.evals.bfcl.checker import check_no_call
from agent.evals.bfcl.data import WHEEL_ENV, load_cases, split_of
from agent.evals.bfcl.harness import evaluate, judge_text
from agent.evals.bfcl.practice import practice, record_demonstrations
from agent.testing import ScriptedChatModel
from memory import HashingEmbedder, InMemoryBuffer
from skills import SkillStore, UserError

N_CASES = 16


def _irrelevant(i: int) -> dict[str, Any]:
    return {
        "id": f"irrelevance_{i}",
        "question": [[{"role": "user", "content": f"Calculate the area of a triangle with base {i} and height 5."}]],
        "function": [
            {
                "name": "determine_body_mass_index",
                "description": "Calculate body mass index given weight and height.",
                "parameters": {
                    "type": "dict",
                    "properties": {"weight": {"type": "float"}, "height": {"type": "float"}},
                    "required": ["weight", "height"],
                },
            }
        ],
    }


@pytest.fixture
def wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """bfcl-eval's layout: irrelevance has a questions file and no possible_answer file."""
    path = tmp_path / "bfcl_eval-2026.3.23-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        rows = "".join(json.dumps(_irrelevant(i)) + "\n" for i in range(N_CASES))
        archive.writestr("bfcl_eval/data/BFCL_v4_irrelevance.json", rows)
    monkeypatch.setenv(WHEEL_ENV, str(path))
    return path


CALL = '<tool_call>{"name": "determine_body_mass_index", "arguments": {"weight": 70, "height": 1.8}}</tool_call>'


def make_agent(home: Path, replies: Any) -> Agent:
    return Agent(
        settings=Settings(home=home),
        model=ScriptedChatModel(replies),
        tools=[],
        store=SkillStore(home / "skills"),
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
    )


def test_irrelevance_cases_load_without_answers_and_split_by_sha256_parity(wheel: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    every = load_cases(home, "irrelevance")
    assert len(every) == N_CASES and all(c.possible_answer == [] and c.expects_no_call for c in every)
    test, train = load_cases(home, "irrelevance", "test"), load_cases(home, "irrelevance", "train")
    assert [c.id for c in test] == [c.id for c in every if split_of(c.id) == "test"]
    assert len(test) + len(train) == N_CASES and test and train
    with pytest.raises(UserError, match="no ground-truth call"):
        every[0].ground_truth()


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("A triangle's area is half its base times its height: 25.", True),
        (CALL, False),
        ('```json\n{"name": "determine_body_mass_index", "arguments": {"weight": 1, "height": 2}}\n```', False),
        ("determine_body_mass_index(weight=70, height=1.8)", False),
        ('<tool_call>{"name": "triangle_area", "arguments": {}}</tool_call>', False),  # an invented function too
    ],
)
def test_a_case_is_right_exactly_when_the_agents_parser_reads_no_call(
    wheel: Path, tmp_path: Path, text: str, valid: bool
) -> None:
    case = load_cases(tmp_path / "home", "irrelevance", limit=1)[0]
    call, verdict = judge_text(case, text)
    assert verdict.valid == valid and (call is None) == valid, verdict
    assert verdict == check_no_call(call) and (valid or verdict.error_type == "irrelevance:called")


def test_the_harness_reports_the_call_rate_on_irrelevance(wheel: Path, tmp_path: Path) -> None:
    replies = iter([True, False, False, True])
    agent = make_agent(tmp_path / "home", lambda conversation: CALL if next(replies) else "The area is 25.")
    report = evaluate(agent, "irrelevance", "test", limit=4, mode="base")
    assert (report.n, report.correct, report.tool_call_rate, report.accuracy) == (4, 2, 0.5, 0.5)
    system = agent.model.calls[0][0]["content"]  # type: ignore[attr-defined]
    assert '"name": "determine_body_mass_index"' in system, "the case's own functions are offered"
    assert agent.buffer.list() == [], "measuring is not experience"


def test_irrelevance_is_never_trained_on(wheel: Path, tmp_path: Path) -> None:
    agent = make_agent(tmp_path / "home", ["no"])
    train = load_cases(tmp_path / "home", "irrelevance", "train")
    with pytest.raises(UserError, match="never trained on"):
        record_demonstrations(agent, train)
    with pytest.raises(UserError, match="never trained on"):
        practice(agent, train, attempts=1)
    assert agent.buffer.list() == []


def test_cli_eval_bfcl_irrelevance(wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_bfcl, "make_agent", lambda settings, tokens: make_agent(settings.home, [CALL, "No."]))
    monkeypatch.setenv("HABITLOOP_HOME", str(tmp_path / "cli-home"))
    result = CliRunner().invoke(app, ["eval", "bfcl", "--category", "irrelevance", "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["category"], payload["n"], payload["tool_call_rate"], payload["accuracy"]) == (
        "irrelevance",
        2,
        0.5,
        0.5,
    )
    refused = CliRunner().invoke(app, ["practice", "bfcl", "--category", "irrelevance", "--demonstrations"])
    assert isinstance(refused.exception, UserError) and "never trained on" in str(refused.exception)
