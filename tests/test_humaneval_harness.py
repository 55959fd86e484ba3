"""The HumanEval harness over the agent loop (scripted replies): style by the skill's ruff rules, pass@1 in the
sandbox, the modes, the runs leaving the buffer, and `habitloop eval humaneval` / `habitloop skills learn-style`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

import agent.cli.style as cli_style
from agent import Agent, Settings
from agent.cli.app import app
from agent.evals.humaneval.data import Problem
from agent.evals.humaneval.harness import evaluate, program, style_rules
from agent.testing import ScriptedChatModel
from memory import HashingEmbedder, InMemoryBuffer
from memory.style import discover_rules
from skills import SkillStore, UserError
from skills.manifest import Evaluation

PROMPT = (
    "from typing import List\n\n\ndef double_all(numbers: List[int]) -> List[int]:\n"
    '    """Double each number.\n    >>> double_all([1])\n    [2]\n    """\n'
)
TEST = "def check(candidate):\n    assert candidate([1, 2]) == [2, 4]\n    assert candidate([]) == []\n"
IN_STYLE = (
    "Here you are:\n```python\ndef double_all(numbers: List[int]) -> List[int]:\n"
    '    """Double each number."""\n    return [2 * n for n in numbers]\n```'
)
UNSTYLED = "def double_all(numbers):\n    return [n + n for n in numbers]\n"
WRONG = '```python\ndef double_all(numbers: list[int]) -> list[int]:\n    """Double."""\n    return numbers\n```'


def problems(n: int = 3) -> list[Problem]:
    return [
        Problem(task_id=f"HumanEval/{i}", prompt=PROMPT, canonical_solution="", test=TEST, entry_point="double_all")
        for i in range(n)
    ]


def rules_dump() -> dict[str, Any]:
    styled = 'def add_{0}(a: int, b: int) -> int:\n    """Add two numbers."""\n    return a + b\n'
    return discover_rules([styled.format(i) for i in range(10)]).model_dump(mode="json")


def make_agent(home: Path, replies: Any, adapter: Callable[[str], Path], fingerprint: str, **kwargs: Any) -> Agent:
    store = SkillStore(home / "skills", base_fingerprint=fingerprint)
    if not store.exists("house-style"):
        details = {"config": {"style": {"rules": rules_dump(), "source": {"path": "/repo"}}}}
        store.create("house-style", adapter("alpha"), kind="style", evaluation=Evaluation(details=details))
        store.create("plain", adapter("beta"), kind="tool_habit")
    return Agent(
        settings=Settings(home=home),
        model=ScriptedChatModel(replies),
        store=store,
        tools=[],
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
        **kwargs,
    )


def test_each_reply_is_judged_by_the_rules_and_by_the_tests_and_leaves_the_buffer(
    tmp_path: Path, adapter: Callable[[str], Path], tiny: Any
) -> None:
    agent = make_agent(tmp_path, [IN_STYLE, UNSTYLED, WRONG], adapter, tiny.fingerprint)
    report = evaluate(agent, problems(), mode="base", skill="house-style", batch=1, timeout=5)
    assert [(c.in_style, c.passed) for c in report.cases] == [(True, True), (False, True), (True, False)]
    assert report.style_rate == pytest.approx(2 / 3) and report.pass_at_1 == pytest.approx(2 / 3)
    assert report.violations_per_function["ANN"] >= 2 / 3 and report.violations_per_function["D"] >= 1 / 3
    assert report.cases[0].code.startswith("def double_all") and report.cases[2].status == "failed"
    assert report.rules_from == "house-style" and report.mode == "base" and report.skill is None
    assert "Double each number." in agent.model.calls[0][-1]["content"]  # type: ignore[attr-defined]
    assert ">>>" not in agent.model.calls[0][-1]["content"]  # type: ignore[attr-defined]
    assert agent.buffer.stats().total == 0, "an evaluation on the test split never becomes training data"


def test_skill_mode_runs_the_skill_and_a_composition_reads_the_style_parts_rules(
    tmp_path: Path, adapter: Callable[[str], Path], tiny: Any
) -> None:
    agent = make_agent(tmp_path, lambda _: IN_STYLE, adapter, tiny.fingerprint)
    report = evaluate(agent, problems(2), mode="skill", skill="plain+house-style", timeout=5)
    assert report.skill == "plain+house-style" and report.rules_from == "house-style" and report.style_rate == 1.0
    assert [name for name, _ in agent.model.skills_seen[0]] == ["plain", "house-style"]  # type: ignore[attr-defined]
    with pytest.raises(UserError, match="holds no style skill"):
        style_rules(agent, "plain")
    with pytest.raises(UserError, match="unknown mode"):
        evaluate(agent, problems(1), mode="nonsense", skill="house-style")


def test_retrieval_mode_shows_recorded_functions_and_base_mode_does_not(
    tmp_path: Path, adapter: Callable[[str], Path], tiny: Any
) -> None:
    from memory.trajectory import Trajectory

    agent = make_agent(tmp_path, lambda _: IN_STYLE, adapter, tiny.fingerprint)
    agent.learn_from(Trajectory.demonstration("Write a Python function `triple_all(numbers)`: Triple.", "```x```"))
    retrieval = evaluate(agent, problems(1), mode="retrieval", skill="house-style", k=1, timeout=5)
    base = evaluate(agent, problems(1), mode="base", skill="house-style", timeout=5)
    assert any("triple_all" in str(m["content"]) for m in agent.model.calls[0])  # type: ignore[attr-defined]
    assert not any("triple_all" in str(m["content"]) for m in agent.model.calls[1])  # type: ignore[attr-defined]
    assert retrieval.k == 1 and retrieval.prompt_tokens_mean > base.prompt_tokens_mean
    assert agent.buffer.stats().total == 1, "only the demonstration stays"


def test_the_program_is_the_prompts_imports_and_helpers_then_the_code() -> None:
    prompt = 'import math\n\n\ndef helper(x):\n    return x\n\n\ndef f(x):\n    """Use it."""\n'
    problem = Problem(task_id="X/1", prompt=prompt, canonical_solution="", test="", entry_point="f")
    assert program(problem, "def f(x):\n    return helper(x)") == (
        "from __future__ import annotations\n\n\nimport math\n\n\ndef helper(x):\n    return x\n\n\n"
        "def f(x):\n    return helper(x)"
    )
    folded = program(problem, "from __future__ import division\ndef f(x):\n    return x")
    assert folded.startswith("from __future__ import annotations, division\n") and folded.count("__future__") == 1


def test_an_annotation_with_a_name_the_reply_never_imports_is_not_a_failure(
    tmp_path: Path, adapter: Callable[[str], Path], tiny: Any
) -> None:
    reply = (
        'def double_all(numbers: Sequence[int]) -> list[int]:\n    """Double each number."""\n'
        "    return [2 * n for n in numbers]\n"
    )
    agent = make_agent(tmp_path, [reply, reply.replace("2 * n", "undefined_name * n")], adapter, tiny.fingerprint)
    report = evaluate(agent, problems(2), mode="base", skill="house-style", batch=1, timeout=5)
    assert [c.status for c in report.cases] == ["passed", "error"], "a name the body uses still has to exist"


# ------------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapter: Callable[[str], Path], tiny: Any
) -> tuple[Path, list[Agent]]:
    home = tmp_path / "cli-home"
    made: list[Agent] = []

    def factory(settings: Settings, max_new_tokens: int) -> Agent:
        made.append(make_agent(settings.home, lambda _: IN_STYLE, adapter, tiny.fingerprint))
        return made[-1]

    monkeypatch.setattr(cli_style, "make_agent", factory)
    monkeypatch.setattr("agent.evals.humaneval.data.load_problems", lambda home, split, limit=None: problems(2))
    monkeypatch.setenv("HABITLOOP_HOME", str(home))
    return home, made


def test_cli_eval_humaneval_json_table_and_per_problem_lines(
    cli_home: tuple[Path, list[Agent]], tmp_path: Path
) -> None:
    out = tmp_path / "cases.jsonl"
    args = ["eval", "humaneval", "--skill", "house-style", "--limit", "2", "--json", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    wanted = {"mode", "n", "style_rate", "pass_at_1", "violations_per_function", "prompt_tokens_mean"}
    wanted.add("seconds_per_case")
    assert wanted <= set(payload) and (payload["n"], payload["style_rate"], payload["pass_at_1"]) == (2, 1.0, 1.0)
    assert [json.loads(line)["task_id"] for line in out.read_text().splitlines()] == ["HumanEval/0", "HumanEval/1"]
    table = CliRunner().invoke(app, ["eval", "humaneval", "--skill", "house-style"])
    assert table.exit_code == 0 and "100.0%" in table.stdout
    bad = CliRunner().invoke(app, ["eval", "humaneval", "--split", "dev"])
    assert bad.exit_code != 0


def test_cli_learn_style_records_only_with_json(cli_home: tuple[Path, list[Agent]], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    styled = 'def add_{0}(a: int, b: int) -> int:\n    """Add two numbers."""\n    return a + b\n'
    (repo / "maths.py").write_text("\n\n".join(styled.format(i) for i in range(6)))
    args = ["skills", "learn-style", str(repo), "--name", "maths-style", "--record-only", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["functions"], payload["demonstrations"], payload["consolidation"]) == (6, 6, None)
    assert "ANN" in payload["rules"]["select"] and payload["path"] == str(repo.resolve())
    assert cli_home[1][-1].buffer.stats().unconsolidated_successes == 6
