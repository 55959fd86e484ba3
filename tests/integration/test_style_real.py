"""Integration: the built-in python-style pack on the real base (install by name, measured on HumanEval test
problems against the base, by its own ruff rules, with the tests run in the sandbox), and learn-style's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from agent import Agent, Settings
from agent.backends.local import LocalChatModel
from agent.evals.humaneval.data import load_problems
from agent.evals.humaneval.harness import evaluate
from memory import HashingEmbedder, InMemoryBuffer
from memory.recipe import style_of
from skills import Residency, SkillStore
from skills.packs import builtin_packs, install_pack, read_manifest

N_PROBLEMS = 6


def test_the_builtin_style_pack_is_for_this_base_and_says_what_it_measured(real_base: Any) -> None:
    manifest = read_manifest(builtin_packs()["python-style"])
    assert manifest.base_fingerprint == real_base.fingerprint, "rebuild it: scripts/build_python_style_pack.py"
    assert "Measured on HumanEval" in manifest.description and not manifest.tools


def test_the_style_skill_writes_in_its_style_where_the_base_does_not(real_base: Any, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    store = SkillStore(settings.skills_dir, base_fingerprint=real_base.fingerprint)
    install_pack("python-style", store, settings.packs_dir)
    style = style_of(store.revision("python-style"))
    assert style is not None and {"ANN", "D"} <= set(style.rules.select)
    residency = Residency(real_base.model, store, max_hot=1)
    agent = Agent(
        settings=settings,
        base=real_base,
        model=LocalChatModel(real_base, residency),
        store=store,
        tools=[],
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
        max_steps=1,
        max_new_tokens=320,
    )
    try:
        problems = load_problems(settings.home, "test", limit=N_PROBLEMS)
        base = evaluate(agent, problems, mode="base", skill="python-style", batch=N_PROBLEMS)
        skill = evaluate(agent, problems, mode="skill", skill="python-style", batch=N_PROBLEMS)
    finally:
        residency.model.unload()
    assert skill.style_rate > base.style_rate, (base.summary(), skill.summary())
    assert skill.violations_per_function.get("ANN", 0.0) < base.violations_per_function.get("ANN", 0.0)
    assert all(c.status in ("passed", "failed", "error", "timeout") for c in skill.cases)
    assert agent.buffer.stats().total == 0
