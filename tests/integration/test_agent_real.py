"""Integration: the agent loop on the real base, with a real tool, a real skill, the CLI and the examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agent import Agent, Settings
from agent.backends.local import LocalChatModel
from agent.bench.arithmetic import arithmetic_items, demonstration
from agent.prompt import system_prompt
from memory import HashingEmbedder, InMemoryBuffer
from memory.dataset import example_from
from skills import Residency, SkillStore, TrainConfig, train_lora
from tools import ToolRegistry, calculator

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], home: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HABITLOOP_HOME": str(home)}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def calc_skill(real_base: Any, real_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> SkillStore:
    """A calculator habit trained on the real base from 16 demonstrations of the loop (~1 min on 2 cores)."""
    store = SkillStore(real_settings.skills_dir, base_fingerprint=real_base.fingerprint)
    if not store.exists("calc-loop"):
        system = system_prompt(ToolRegistry([calculator]).schemas()) or ""
        examples = [example_from(demonstration(system, q, e)) for q, e in arithmetic_items(16, seed=3)]
        out = tmp_path_factory.mktemp("calc") / "adapter"
        result = train_lora(
            real_base.model, real_base.tokenizer, examples, out, config=TrainConfig(steps=12, seed=0), progress=False
        )
        store.create("calc-loop", result.adapter_dir, kind="tool_habit", provenance=result.provenance)
    return store


def test_the_real_base_acts_through_a_real_tool_with_a_skill(
    real_base: Any, real_settings: Settings, calc_skill: SkillStore
) -> None:
    residency = Residency(real_base.model, calc_skill, max_hot=2)
    agent = Agent(
        settings=real_settings,
        base=real_base,
        model=LocalChatModel(real_base, residency),
        store=calc_skill,
        tools=[calculator],
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
        max_steps=3,
        max_new_tokens=48,
    )
    try:  # the session's base goes back as it came, even when an assert fails
        held_out = arithmetic_items(40, seed=11)[-2:]
        results = [agent.run(q, skills=["calc-loop"]) for q, _ in held_out]
        calls = [s for r in results for s in r.steps if s.kind == "tool_call"]
        outputs = [s for r in results for s in r.steps if s.kind == "tool_result"]
        assert calls, [[(s.kind, s.text) for s in r.steps] for r in results]
        assert all(s.tool == "calculator" for s in calls)
        assert any(s.ok for s in outputs), "the calculator ran on the model's arguments"
        for result in results:
            assert result.trajectory.skills[0].name == "calc-loop"
            assert result.trajectory.prompt_tokens > 100
        # the same agent without the skill: the base answers in prose (recorded, not an error)
        plain = agent.run(held_out[0][0])
        assert plain.trajectory.steps[0].kind == "model"
    finally:
        residency.model.unload()


def test_cli_run_json_on_the_real_base(real_base: Any, real_home: Path) -> None:
    result = _run(
        [sys.executable, "-m", "agent.cli", "run", "What is 17*23? Use the calculator.", "--json", "--max-steps", "2"],
        real_home,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert {"run_id", "thread_id", "answer", "outcome", "steps", "prompt_tokens"} <= set(payload)
    assert payload["steps"][0]["kind"] == "model" and payload["steps"][-1]["kind"] == "final"
    assert payload["outcome"]["status"] in {"success", "failure", "unknown"}


@pytest.mark.parametrize(
    "script",
    [
        "00_train_a_skill.py",
        "01_quickstart.py",
        "02_custom_tool.py",
        # the longest examples (3-4 minutes each here) run with `make test-all`, keeping `make test` in its budget
        pytest.param("05_personal_memory.py", marks=pytest.mark.slow),
        pytest.param("06_compose_skills.py", marks=pytest.mark.slow),
    ],
)
def test_examples_run(real_base: Any, real_home: Path, script: str) -> None:
    # a generous limit: the examples train real adapters, and CI machines are shared and slow
    result = _run([sys.executable, str(ROOT / "examples" / script)], real_home, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip()
