"""The BFCL data (from a hand-made wheel), the harness over the agent loop, practice, and the CLI, on fakes."""

from __future__ import annotations

import hashlib
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
from agent.evals.bfcl.checker import check_call
from agent.evals.bfcl.data import WHEEL_ENV, load_cases, split_of
from agent.evals.bfcl.harness import case_tools, evaluate, json_schema
from agent.evals.bfcl.practice import demonstration, practice, record_demonstrations, task_chats
from agent.prompt import system_prompt
from agent.testing import ScriptedChatModel
from memory import HashingEmbedder, InMemoryBuffer
from skills import OperatorError, SkillStore, UserError

N_CASES = 12


def _case(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    question = {
        "id": f"simple_python_{i}",
        "question": [[{"role": "user", "content": f"Find the area of a circle of radius {i}."}]],
        "function": [
            {
                "name": "geometry.area_circle",
                "description": "Area of a circle.",
                "parameters": {
                    "type": "dict",
                    "properties": {
                        "radius": {"type": "float", "description": "radius"},
                        "units": {"type": "string", "description": "unit"},
                        "point": {"type": "tuple", "items": {"type": "integer"}, "description": "centre"},
                        "style": {"type": "dict", "properties": {"c": {"type": "any"}}, "description": "style"},
                    },
                    "required": ["radius"],
                },
            }
        ],
    }
    answer = {
        "id": f"simple_python_{i}",
        "ground_truth": [{"geometry.area_circle": {"radius": [float(i)], "units": ["m", ""]}}],
    }
    return question, answer


def _multiple(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    question, _ = _case(i)
    question["id"] = f"multiple_{i}"
    question["function"].insert(
        0,
        {
            "name": "cube_volume",
            "description": "Volume.",
            "parameters": {
                "type": "dict",
                "properties": {"side": {"type": "integer", "description": "s"}},
                "required": ["side"],
            },
        },
    )
    answer = {"id": f"multiple_{i}", "ground_truth": [{"geometry.area_circle": {"radius": [float(i)]}}]}
    return question, answer


def _lines(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture
def wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A wheel with the layout of bfcl-eval's (two categories), pointed at by HABITLOOP_BFCL_WHEEL."""
    path = tmp_path / "bfcl_eval-2026.3.23-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for category, make in (("simple_python", _case), ("multiple", _multiple)):
            pairs = [make(i) for i in range(N_CASES)]
            archive.writestr(f"bfcl_eval/data/BFCL_v4_{category}.json", _lines([q for q, _ in pairs]))
            archive.writestr(f"bfcl_eval/data/possible_answer/BFCL_v4_{category}.json", _lines([a for _, a in pairs]))
    monkeypatch.setenv(WHEEL_ENV, str(path))
    return path


def right(conversation: list[dict[str, Any]]) -> str:
    """The right call for the circle question in the conversation's last message."""
    radius = float(conversation[-1]["content"].split("radius ")[1].rstrip("."))
    return f'<tool_call>{{"name": "geometry_area_circle", "arguments": {{"radius": {radius}}}}}</tool_call>'


def make_agent(home: Path, replies: Any, **kwargs: Any) -> Agent:
    kwargs.setdefault("store", SkillStore(home / "skills"))
    return Agent(
        settings=Settings(home=home),
        model=ScriptedChatModel(replies),
        tools=[],
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
        **kwargs,
    )


# ------------------------------------------------------------------------------------------------------------ data


def test_the_split_is_sha256_parity_of_the_id(wheel: Path, tmp_path: Path) -> None:
    cases = load_cases(tmp_path / "home", "simple_python")
    assert [c.id for c in cases] == [f"simple_python_{i}" for i in range(N_CASES)]
    for case in cases:
        assert case.split == ("train" if hashlib.sha256(case.id.encode()).digest()[0] % 2 == 0 else "test")
    train = load_cases(tmp_path / "home", "simple_python", "train")
    test = load_cases(tmp_path / "home", "simple_python", "test", limit=2)
    assert train and test and all(c.split == "train" for c in train) and len(test) == 2
    assert not {c.id for c in train} & {c.id for c in load_cases(tmp_path / "home", "simple_python", "test")}
    assert split_of("simple_python_0") == cases[0].split


def test_the_data_is_extracted_once_into_the_home(wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    case = load_cases(home, "multiple")[3]
    assert (home / "bfcl/data/BFCL_v4_multiple.json").is_file()
    assert (home / "bfcl/data/possible_answer/BFCL_v4_multiple.json").is_file()
    assert case.task == "Find the area of a circle of radius 3."
    assert case.ground_truth() == {"name": "geometry.area_circle", "arguments": {"radius": 3.0}}
    monkeypatch.setenv(WHEEL_ENV, str(tmp_path / "gone.whl"))  # extracted: the wheel is not needed again
    assert len(load_cases(home, "multiple")) == N_CASES


def test_missing_data_and_unknown_categories_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WHEEL_ENV, str(tmp_path / "nope.whl"))
    with pytest.raises(UserError, match="not a file"):
        load_cases(tmp_path / "home", "simple_python")
    with pytest.raises(UserError, match="unsupported BFCL category"):
        load_cases(tmp_path / "home", "simple_java")
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    monkeypatch.setenv(WHEEL_ENV, str(bad))
    with pytest.raises(OperatorError, match="not a usable"):
        load_cases(tmp_path / "home", "simple_python")


def test_bfcl_types_become_json_schema() -> None:
    schema = json_schema(_case(0)[0]["function"][0]["parameters"])
    assert schema["type"] == "object"
    props = schema["properties"]
    assert props["radius"]["type"] == "number" and props["point"] == {
        "type": "array",
        "items": {"type": "integer"},
        "description": "centre",
    }
    assert props["style"]["type"] == "object" and props["style"]["properties"]["c"]["type"] == "string"


# ------------------------------------------------------------------------------------------------------------ harness


def test_base_mode_runs_each_case_through_the_agent_with_its_own_tools(wheel: Path, tmp_path: Path) -> None:
    replies = iter([True, False, True, True])
    agent = make_agent(tmp_path / "home", lambda c: right(c) if next(replies) else "The area is pi r squared.")
    report = evaluate(agent, "simple_python", "test", limit=4, mode="base")
    assert (report.n, report.correct, report.accuracy, report.tool_call_rate) == (4, 3, 0.75, 0.75)
    # both measured, per case and as the mean (a time of 0 would mean the cases were not timed at all)
    assert all(c.prompt_tokens > 0 and c.seconds > 0 for c in report.cases)
    assert report.prompt_tokens_mean == sum(c.prompt_tokens for c in report.cases) / 4
    assert report.seconds_per_case == pytest.approx(sum(c.seconds for c in report.cases) / 4)
    prompts = agent.model.calls  # type: ignore[attr-defined]
    assert len(prompts) == 4, "one model call per case: max_steps=1, the tools never run"
    system = prompts[0][0]["content"]
    assert '"name": "geometry_area_circle"' in system and '"type": "number"' in system and '"dict"' not in system
    assert [m["role"] for m in prompts[0]] == ["system", "user"]
    failed = next(c for c in report.cases if not c.valid)
    assert failed.call is None and failed.text.startswith("The area") and failed.reason
    ok = next(c for c in report.cases if c.valid)
    assert ok.call == {"name": "geometry_area_circle", "arguments": {"radius": float(ok.id.split("_")[-1])}}
    assert agent.buffer.list() == [], "evaluation runs leave the buffer: test items never become training data"
    assert set(report.summary()) >= {"category", "split", "mode", "n", "accuracy", "prompt_tokens_mean"}


def test_multiple_judges_the_right_function_among_several(wheel: Path, tmp_path: Path) -> None:
    wrong = make_agent(tmp_path / "a", ['<tool_call>{"name": "cube_volume", "arguments": {"side": 2}}</tool_call>'])
    assert evaluate(wrong, "multiple", "test", limit=1).accuracy == 0.0
    agent = make_agent(tmp_path / "b", right)
    assert evaluate(agent, "multiple", "test", limit=3).accuracy == 1.0


def test_retrieval_mode_shows_similar_demonstrations_and_base_mode_does_not(wheel: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    agent = make_agent(home, right)
    train = load_cases(home, "simple_python", "train")
    recorded = record_demonstrations(agent, train)
    assert len(recorded) == len(train) == agent.buffer.stats().unconsolidated_successes
    first = recorded[0]
    assert first.system_prompt and "geometry_area_circle" in first.system_prompt
    assert first.answer == right([{"content": train[0].task}])
    evaluate(agent, "simple_python", "test", limit=1, mode="base")
    evaluate(agent, "simple_python", "test", limit=1, mode="retrieval", k=2)
    base_prompt, retrieval_prompt = agent.model.calls  # type: ignore[attr-defined]
    assert len(base_prompt) == 2 and len(retrieval_prompt) == 2 + 2 * 2
    assert retrieval_prompt[2]["content"].startswith("<tool_call>")
    assert agent.buffer.stats().unconsolidated_successes == len(train), "the evaluations left nothing behind"


def test_skill_mode_activates_the_skill_and_needs_one(
    wheel: Path, tmp_path: Path, adapter: Any, store: SkillStore
) -> None:
    agent = make_agent(tmp_path / "home", right, store=store)
    with pytest.raises(UserError, match="needs a skill"):
        evaluate(agent, "simple_python", "test", limit=1, mode="skill")
    with pytest.raises(UserError):
        evaluate(agent, "simple_python", "test", limit=1, mode="skill", skill="nope")
    with pytest.raises(UserError, match="unknown mode"):
        evaluate(agent, "simple_python", "test", limit=1, mode="magic")
    agent.store.create("tool-habits", adapter(), kind="tool_habit")
    report = evaluate(agent, "simple_python", "test", limit=2, mode="skill", skill="tool-habits")
    assert report.accuracy == 1.0 and report.skill == "tool-habits"
    assert agent.model.skills_seen == [[("tool-habits", 1)]] * 2  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------------------ practice


def test_practice_keeps_the_checkers_verdicts_and_stops_at_the_first_success(wheel: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    train = load_cases(home, "simple_python", "train", limit=2)
    # Per case (the cases of one attempt round are sampled as one batch, in any order): the first case fails once,
    # the second twice, before the right call.
    failures = {train[0].task: ["no idea"], train[1].task: ["hmm", "no idea"]}

    def reply(conversation: list[dict[str, Any]]) -> str:
        left = failures[conversation[-1]["content"]]
        return left.pop(0) if left else right(conversation)

    agent = make_agent(home, reply)
    summary = practice(agent, train, attempts=3)
    assert (summary.cases, summary.attempts, summary.solved) == (2, 5, 2)
    successes = agent.buffer.list(status="success")
    assert {t.id for t in successes} == set(summary.episode_ids)
    assert all(t.outcome.judged_by == "checker" for t in agent.buffer.list())
    assert len(agent.buffer.list(status="failure")) == 3
    assert [m["role"] for m in successes[0].messages] == ["user", "assistant"]
    assert successes[0].answer and successes[0].answer.startswith("<tool_call>")


def test_nothing_from_the_test_split_is_ever_learned(wheel: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    agent = make_agent(home, right)
    test = load_cases(home, "simple_python", "test", limit=1)
    with pytest.raises(UserError, match="test split"):
        record_demonstrations(agent, test)
    with pytest.raises(UserError, match="test split"):
        practice(agent, test)
    assert agent.buffer.list() == []


def test_a_demonstration_is_the_ground_truth_in_the_prompt_format(wheel: Path, tmp_path: Path) -> None:
    case = load_cases(tmp_path / "home", "simple_python", "train")[0]
    for state_optional in (False, True):
        episode = demonstration(case, state_optional=state_optional)
        assert episode.outcome.status == "success"
        assert episode.system_prompt == system_prompt(case_tools(case).schemas())
        reply = episode.messages[-1]["content"]
        payload = json.loads(reply.removeprefix("<tool_call>").removesuffix("</tool_call>"))
        truth = case.ground_truth(state_optional=state_optional)
        assert payload == {"name": "geometry_area_circle", "arguments": truth["arguments"]}


def test_optional_values_are_left_out_unless_stated_and_both_pass_the_checker(wheel: Path, tmp_path: Path) -> None:
    case = load_cases(tmp_path / "home", "simple_python", "train")[0]  # units: "m", or omitted
    radius = case.possible_answer[0]["geometry.area_circle"]["radius"][0]
    assert case.ground_truth()["arguments"] == {"radius": radius}
    assert case.ground_truth(state_optional=True)["arguments"] == {"radius": radius, "units": "m"}
    for state_optional in (False, True):
        call = case.ground_truth(state_optional=state_optional)
        assert check_call(case.functions, case.possible_answer, call).valid


# ------------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli_home(wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Agent]]:
    home = tmp_path / "cli-home"
    made: list[Agent] = []

    def factory(settings: Settings, max_new_tokens: int) -> Agent:
        made.append(make_agent(settings.home, right, max_new_tokens=max_new_tokens))
        return made[-1]

    monkeypatch.setattr(cli_bfcl, "make_agent", factory)
    monkeypatch.setenv("HABITLOOP_HOME", str(home))
    return home, made


def test_cli_eval_bfcl_json_and_per_case_lines(cli_home: tuple[Path, list[Agent]], tmp_path: Path) -> None:
    out = tmp_path / "cases.jsonl"
    result = CliRunner().invoke(
        app,
        ["eval", "bfcl", "--category", "simple_python", "--split", "test", "--limit", "3", "--json", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {"category", "split", "mode", "n", "accuracy", "prompt_tokens_mean", "seconds_per_case"} <= set(payload)
    assert (payload["n"], payload["accuracy"], payload["mode"]) == (3, 1.0, "base")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3
    assert {"id", "category", "text", "call", "valid", "reason"} <= set(lines[0])
    assert lines[0]["call"]["name"] == "geometry_area_circle"


def test_cli_eval_bfcl_table(cli_home: tuple[Path, list[Agent]]) -> None:
    result = CliRunner().invoke(app, ["eval", "bfcl", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "100.0%" in result.stdout


def test_cli_practice_bfcl_demonstrations_and_sampling(cli_home: tuple[Path, list[Agent]]) -> None:
    home, made = cli_home
    result = CliRunner().invoke(app, ["practice", "bfcl", "--demonstrations", "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["demonstrations"] == 2
    assert made[-1].buffer.stats().unconsolidated_successes == 2
    result = CliRunner().invoke(app, ["practice", "bfcl", "--attempts", "2", "--limit", "3", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["cases"], payload["solved"], payload["attempts"]) == (3, 3, 3)


def test_cli_refuses_practice_on_the_test_split(cli_home: tuple[Path, list[Agent]]) -> None:
    result = CliRunner().invoke(app, ["practice", "bfcl", "--split", "test"])
    assert isinstance(result.exception, UserError)


def test_cli_demonstrations_can_state_the_optional_values(cli_home: tuple[Path, list[Agent]]) -> None:
    home, made = cli_home
    args = ["practice", "bfcl", "--demonstrations", "--state-optional", "--limit", "1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (episode,) = made[-1].buffer.list(consolidated=False)
    assert '"units": "m"' in episode.messages[-1]["content"]
    result = CliRunner().invoke(app, ["practice", "bfcl", "--state-optional"])
    assert isinstance(result.exception, UserError), "--state-optional shapes demonstrations only"


def test_batched_evaluation_gives_the_verdicts_of_one_case_at_a_time(wheel: Path, tmp_path: Path) -> None:
    def reply(conversation: list[dict[str, Any]]) -> str:  # right for odd radii only: mixed verdicts per batch
        radius = float(conversation[-1]["content"].split("radius ")[1].rstrip("."))
        return right(conversation) if radius % 2 else "The area is pi r squared."

    reports, seen = {}, {}
    for batch in (1, 3):
        agent = make_agent(tmp_path / f"home{batch}", reply)
        seen[batch] = []
        reports[batch] = evaluate(agent, "simple_python", "test", limit=5, batch=batch, on_case=seen[batch].append)
        assert agent.buffer.list() == [], "batched runs leave the buffer too"
    one, three = reports[1], reports[3]
    assert 0 < one.correct < one.n == three.n == 5

    def rows(report: Any) -> list[tuple[Any, ...]]:
        return [(c.id, c.valid, c.text, c.call) for c in report.cases]

    assert rows(one) == rows(three)
    assert [c.id for c in seen[3]] == [c.id for c in three.cases], "progress is reported per case, in order"
    with pytest.raises(UserError, match="batch size"):
        evaluate(make_agent(tmp_path / "h", reply), "simple_python", "test", limit=1, batch=0)


# ------------------------------------------------------------------------------------------------ skill specs


def test_skill_mode_pins_revisions_and_composes_skills(
    wheel: Path, tmp_path: Path, adapter: Any, store: SkillStore
) -> None:
    agent = make_agent(tmp_path / "home", right, store=store)
    store.create("tool-habits", adapter("alpha"), kind="tool_habit")
    store.add_revision("tool-habits", adapter("beta"))
    store.create("multiple-habits", adapter("gamma"), kind="tool_habit")
    seen: list[Any] = agent.model.skills_seen  # type: ignore[attr-defined]

    evaluate(agent, "simple_python", "test", limit=1, mode="skill", skill="tool-habits")
    evaluate(agent, "simple_python", "test", limit=1, mode="skill", skill="tool-habits@1")
    evaluate(agent, "simple_python", "test", limit=1, mode="skill", skill="tool-habits@1+multiple-habits")
    assert seen == [[("tool-habits", 2)], [("tool-habits", 1)], [("tool-habits", 1), ("multiple-habits", 1)]]
    run = agent.run("What is the area of a circle of radius 2.", skills=["tool-habits@1"], max_steps=1)
    assert [(s.name, s.revision) for s in run.trajectory.skills] == [("tool-habits", 1)], "the pin is recorded"

    for bad, message in (("tool-habits@9", "no revision 9"), ("tool-habits+", "empty part"), ("nope", "nope")):
        with pytest.raises(UserError, match=message):
            evaluate(agent, "simple_python", "test", limit=1, mode="skill", skill=bad)
    with pytest.raises(UserError, match="positive integer"):
        agent.run("hi", skills=["tool-habits@x"])
    assert len(seen) == 4, "a bad skill fails before any case runs"


# ------------------------------------------------------------------------ the experiments, on the tiny base

# A few steps and short replies: these tests are about the experiments' plumbing and reports, not about learning.
TINY_RECIPE = {"epochs": 1.0, "min_steps": 1, "max_steps": 2, "max_new_tokens": 8, "replay": 1}


def tiny_agent(home: Path, base: Any) -> Agent:
    """An agent on the tiny base, as `bfcl_agent` builds one on the real base but with in-memory buffer/checkpoints."""
    from agent.evals.bfcl.recipe import MAX_NEW_TOKENS

    return Agent(
        settings=Settings(home=home),
        base=base,
        store=SkillStore(home / "skills", base_fingerprint=base.fingerprint),
        tools=[],
        max_steps=1,
        max_new_tokens=MAX_NEW_TOKENS,
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
    )


def test_the_learning_curve_consolidates_each_count_and_practises_after(
    wheel: Path, tmp_path: Path, fresh_base: Any
) -> None:
    from agent.evals.curve import run_curve

    home = tmp_path / "home"
    agent = tiny_agent(home, fresh_base)
    result = run_curve(
        Settings(home=home), (0, 2, 3), n_test=2, practice_rounds=1, attempts=1, recipe=TINY_RECIPE, agent=agent
    )
    points = result["points"]
    assert [p["episodes"] for p in points[:3]] == [0, 2, 3] and points[3]["practice_round"] == 1
    assert list(points[0]["modes"]) == ["base"]
    for point in points[1:3]:
        assert set(point["modes"]) == {"retrieval", "skill"}
        assert point["modes"]["skill"]["n"] == 2 and point["consolidation"][0]["n_train"] >= 1
    assert agent.store.exists("tool-habits-n2") and agent.store.exists("tool-habits-n3")
    assert points[2]["modes"]["retrieval"]["prompt_tokens_mean"] > points[0]["modes"]["base"]["prompt_tokens_mean"]
    assert points[3]["practice"]["cases"] == len(load_cases(home, "simple_python", "train"))
    assert json.loads((home / "reports" / "bfcl-curve.json").read_text()) == result
    assert (home / "reports" / "bfcl-curve.png").stat().st_size > 0
    assert result["recipe"]["max_steps"] == 2, "the recipe given is the one used"


def test_the_rank_sweep_reports_accuracy_against_adapter_bytes(wheel: Path, tmp_path: Path, fresh_base: Any) -> None:
    from agent.evals.sweep import run_sweep

    home = tmp_path / "home"
    agent = tiny_agent(home, fresh_base)
    result = run_sweep(Settings(home=home), (1, 2), (1,), n_test=2, n_train=3, recipe=TINY_RECIPE, agent=agent)
    by_shape = {p["shape"]: p for p in result["points"]}
    assert list(by_shape) == ["r1-all", "r2-all", "r1-attn"]
    assert (
        by_shape["r1-attn"]["adapter_bytes"] < by_shape["r1-all"]["adapter_bytes"] < by_shape["r2-all"]["adapter_bytes"]
    )
    assert all(p["n"] == 2 and 0.0 <= p["accuracy"] <= 1.0 for p in result["points"])
    spec = agent.store.revision("tool-habits-r1-attn").provenance.training["lora"]
    assert spec["r"] == 1 and set(spec["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (home / "reports" / "bfcl-sweep.png").stat().st_size > 0


def test_forgetting_and_composition_measure_four_models_on_both_categories(
    wheel: Path, tmp_path: Path, fresh_base: Any
) -> None:
    from agent.evals.transfer import run_transfer

    home = tmp_path / "home"
    agent = tiny_agent(home, fresh_base)
    result = run_transfer(Settings(home=home), n_test=2, recipe=TINY_RECIPE, agent=agent)
    assert list(result["models"]) == ["before", "second alone", "composed", "after"]
    assert result["models"]["composed"]["skill"] == "tool-habits@1+multiple-habits"
    assert result["models"]["after"]["skill"] == "tool-habits@2"
    for model in result["models"].values():
        assert set(model["accuracy"]) == {"simple_python", "multiple"}
    assert agent.store.get("tool-habits").revision_numbers() == [1, 2]
    assert agent.store.revision("tool-habits", 2).parent == 1, "the second revision continues the first"
    assert isinstance(result["forgetting_points"], float)
    assert (home / "reports" / "bfcl-transfer.png").stat().st_size > 0


def test_task_chats_are_the_prompts_of_train_cases_only(wheel: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    train = load_cases(home, "simple_python", "train", limit=2)
    chats = task_chats(train)
    for chat, case in zip(chats, train, strict=True):  # what the agent is given, without the reply
        shown = demonstration(case)
        assert chat == [{"role": "system", "content": shown.system_prompt}, {"role": "user", "content": shown.task}]
    with pytest.raises(UserError, match="test split"):
        task_chats(load_cases(home, "simple_python", "test", limit=1))
