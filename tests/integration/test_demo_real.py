"""Integration: `habitloop demo`'s whole loop on the real base with a tiny budget (2 test cases, 4 demonstrations)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from agent import Settings
from agent.evals.bfcl.recipe import SKILL
from agent.evals.demo import run_demo


def test_the_demo_runs_the_whole_loop_and_writes_its_reports(real_base: Any, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    console = Console(record=True, width=120)
    summary = run_demo(
        settings, console=console, n_test=2, n_train=4, practice_cases=2, base=real_base, memory_act=False
    )

    assert summary["n_test"] == 2 and summary["n_train"] == 4 and summary["practice_cases"] == 2
    assert {"base", "retrieval"} <= set(summary["modes"])
    for mode, report in summary["modes"].items():
        assert report["n"] == 2 and 0.0 <= report["accuracy"] <= 1.0, mode
    base, retrieval = summary["modes"]["base"], summary["modes"]["retrieval"]
    assert retrieval["prompt_tokens_mean"] > base["prompt_tokens_mean"], "worked examples lengthen the prompt"
    first = summary["consolidations"][0]
    assert first["skill"] == SKILL and first["n_train"] + first["n_holdout"] == 4
    assert first["train_tokens_per_second"] > 0 and len(first["losses"]) >= 8
    assert ("skill" in summary["modes"]) == first["promoted"], "skill mode runs exactly when the skill exists"

    reports = settings.reports_dir
    assert json.loads((reports / "bfcl-demo.json").read_text()) == summary
    assert (reports / "bfcl-demo.png").stat().st_size > 0
    rows = [json.loads(line) for line in (reports / "bfcl-demo-base.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["mode"] == "base" and row["id"].startswith("simple_python_") for row in rows)
    text = console.export_text()
    assert "report:" in text and "bfcl-demo.json" in text
