"""Integration: the built-in calculator-habit pack on the real base (install by name, use it), and example 03."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from agent import Agent, Settings
from agent.backends.local import LocalChatModel
from memory import HashingEmbedder, InMemoryBuffer
from skills import Residency, SkillStore
from skills.packs import builtin_packs, read_manifest
from tools import calculator

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], home: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HABITLOOP_HOME": str(home)}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_the_builtin_pack_is_for_this_base(real_base: Any) -> None:
    manifest = read_manifest(builtin_packs()["calculator-habit"])
    assert manifest.base_fingerprint == real_base.fingerprint, "retrain it: python examples/build_calculator_pack.py"
    assert "Measured" in manifest.description


def test_install_the_builtin_pack_by_name_and_use_it(real_base: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models").rmdir()
    (home / "models").symlink_to(real_base_models(real_base))  # reuse the converted base: no second conversion
    result = _run([sys.executable, "-m", "agent.cli", "packs", "install", "calculator-habit", "--json"], home)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["skills"] == ["calculator-habit"] and payload["source"] == "builtin:calculator-habit"

    settings = Settings(home=home)
    store = SkillStore(settings.skills_dir, base_fingerprint=real_base.fingerprint)
    residency = Residency(real_base.model, store, max_hot=1)
    agent = Agent(
        settings=settings,
        base=real_base,
        model=LocalChatModel(real_base, residency),
        store=store,
        tools=[calculator],
        checkpointer=InMemorySaver(),
        buffer=InMemoryBuffer(HashingEmbedder()),
        max_steps=3,
        max_new_tokens=48,
    )
    try:
        run = agent.run("What is 37 * 41?", skills=["calculator-habit"], examples=0)
        calls = [s for s in run.steps if s.kind == "tool_call"]
        assert calls and calls[0].tool == "calculator", [(s.kind, s.text) for s in run.steps]
    finally:
        residency.model.unload()


def real_base_models(real_base: Any) -> Path:
    """The folder holding the converted base (`$HOME/models`) of the session's real base."""
    return Path(real_base.info().cache_path).parent


def test_example_03_runs(real_base: Any, real_home: Path) -> None:
    result = _run([sys.executable, str(ROOT / "examples" / "03_skill_pack.py")], real_home, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "user: installed stock-pack" in result.stdout and "untrusted:" in result.stdout
