"""The headline BFCL measurement, in phases that can run apart (slow on 2 cores; run with nohup).

`consolidate [--state-optional] [RECIPE-JSON [CATEGORY ...]]`: record all of simple_python's train demonstrations
(194), and those of any further CATEGORY (e.g. `multiple`), and consolidate them into `tool-habits` with the demo's
recipe (RECIPE-JSON overrides it); `--state-optional` states the optional values the answers give
(`BfclCase.ground_truth`); writes `reports/bfcl-headline-consolidation.json`.
`eval MODE [LIMIT] [CATEGORY]`: evaluate MODE (base, retrieval, skill) on the test split (all 206, or the first LIMIT;
0: all) of simple_python, or of CATEGORY (`irrelevance`: the other side, where no offered function fits and the
call rate is the figure); retrieval first records the 194 simple_python demonstrations again as unconsolidated
episodes (what retrieval reads), and discards them afterwards. Writes `reports/bfcl-headline-<mode>.json`
(`-<mode>-<category>.json` for another category; + per-case `.jsonl`).
`practice ATTEMPTS [RECIPE-JSON]`: one practice round over simple_python's train split with `tool-habits` active
(sampling, the checker as judge), then the successes consolidated into its next revision; writes
`reports/bfcl-headline-practice.json`. Run `eval skill` again afterwards.
`summary`: gathers the phases' files into `reports/bfcl-headline.json` and a PNG; each mode's `multiple` accuracy and
irrelevance call rate, where measured, sit beside its simple_python accuracy (`side_by_side`).
`compare LABEL=HOME ... OUT.json`: the skill rows of several homes' summaries side by side (e.g. a recipe with
negatives and one without, `{"negative_share": 0}`), with their gates' figures.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from agent.config import Settings
from agent.evals.bfcl.data import load_cases
from agent.evals.bfcl.harness import evaluate
from agent.evals.bfcl.practice import practice
from agent.evals.bfcl.recipe import CATEGORY, SKILL, bfcl_agent, fresh_demonstrations
from agent.evals.demo import plot_demo
from memory.consolidate import ConsolidationReport


def write_phase(settings: Settings, phase: str, out: dict[str, Any], reports: Sequence[ConsolidationReport]) -> None:
    """`reports/bfcl-headline-<phase>.json`: `out` and the consolidation reports; each report's gist printed."""
    out["consolidations"] = [r.model_dump(mode="json") for r in reports]
    path = settings.reports_dir / f"bfcl-headline-{phase}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    for r in reports:
        print(r.model_dump_json(exclude={"losses", "episodes"}), flush=True)


def consolidate(
    settings: Settings, recipe: dict[str, Any], also: Sequence[str] = (), *, state_optional: bool = False
) -> None:
    agent = bfcl_agent(settings, **recipe)
    train = [case for category in (CATEGORY, *also) for case in load_cases(settings.home, category, "train")]
    fresh_demonstrations(agent, train, state_optional=state_optional)
    started = time.perf_counter()
    reports = agent.consolidate(SKILL, min_episodes=1)
    out = {
        "n_train_cases": len(train),
        "train_categories": [CATEGORY, *also],
        "state_optional": state_optional,
        "recipe": agent.consolidation.model_dump(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_phase(settings, "consolidation", out, reports)


def practice_round(settings: Settings, attempts: int, recipe: dict[str, Any]) -> None:
    agent = bfcl_agent(settings, **recipe)
    train = load_cases(settings.home, CATEGORY, "train")
    agent.buffer.discard([t.id for t in agent.buffer.list(consolidated=False)])
    before = agent.store.get(SKILL).current
    started = time.perf_counter()
    summary = practice(agent, train, attempts=attempts, skill=SKILL)
    practice_seconds = time.perf_counter() - started
    print(f"solved {summary.solved}/{summary.cases} in {summary.attempts} samples, {practice_seconds:.0f} s")
    reports = agent.consolidate(SKILL, min_episodes=1) if summary.solved else []
    out = {
        "skill_revision_before": before,
        "practice": summary.model_dump(exclude={"episode_ids"}),
        "practice_seconds": round(practice_seconds, 1),
        "recipe": agent.consolidation.model_dump(),
    }
    write_phase(settings, "practice", out, reports)


def run_eval(settings: Settings, mode: str, limit: int | None, category: str = CATEGORY) -> None:
    agent = bfcl_agent(settings)
    test = load_cases(settings.home, category, "test", limit=limit)
    recorded = []
    if mode == "retrieval":
        recorded = fresh_demonstrations(agent, load_cases(settings.home, CATEGORY, "train"))
    done = [0, 0]
    started = time.perf_counter()

    def tick(result: Any) -> None:
        done[0] += 1
        done[1] += result.valid
        if done[0] % 8 == 0:
            print(f"{mode}: {done[0]}/{len(test)} {done[1]} correct, {time.perf_counter() - started:.0f} s", flush=True)

    report = evaluate(
        agent, category, "test", mode=mode, skill=SKILL if mode == "skill" else None, k=3, cases=test, on_case=tick
    )
    if recorded:
        agent.buffer.discard([t.id for t in recorded])
    summary = report.summary() | {"wall_seconds": round(time.perf_counter() - started, 1)}
    if mode == "skill":
        summary["skill_revision"] = agent.store.get(SKILL).current
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    stem = f"bfcl-headline-{mode}" + ("" if category == CATEGORY else f"-{category}")
    (settings.reports_dir / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    report.write_cases(settings.reports_dir / f"{stem}.jsonl")
    print(json.dumps(summary), flush=True)


OTHER_CATEGORIES = ("irrelevance", "multiple")
"""Categories evaluated beside simple_python (`eval MODE 0 CATEGORY`): the summary sets them side by side."""


def side_by_side(mode: str, report: dict[str, Any], others: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One mode's figures on both sides: accuracy where a call is wanted, the call rate where none fits."""
    multiple, irrelevance = others["multiple"].get(mode), others["irrelevance"].get(mode)
    return {
        f"{CATEGORY}_accuracy": report["accuracy"],
        "multiple_accuracy": multiple["accuracy"] if multiple else None,
        "irrelevance_call_rate": irrelevance["tool_call_rate"] if irrelevance else None,
    }


def compare(runs: Sequence[str], out: str) -> None:
    """`compare LABEL=HOME ... OUT`: each run's summary (`reports/bfcl-headline.json` in that home) set side by side,
    with its consolidation's gate figures, written to OUT (JSON) and printed as a markdown table."""
    rows = []
    for run in runs:
        label, home = run.split("=", 1)
        summary = json.loads((Path(home) / "reports" / "bfcl-headline.json").read_text())
        gate = summary["consolidation"]["consolidations"][-1]
        rows.append(
            {"run": label, "recipe": summary["consolidation"]["recipe"], **summary["side_by_side"]["skill"]}
            | {
                "n_negatives": gate.get("n_negatives"),
                "promoted": gate["promoted"],
                "heldout_match": [gate["candidate"]["heldout_match"], gate["current"]["heldout_match"]],
                "mismatched_call_rate": [
                    gate["candidate"].get("mismatched_call_rate"),
                    gate["current"].get("mismatched_call_rate"),
                ],
                "wall_seconds": summary["consolidation"]["wall_seconds"],
            }
        )
    Path(out).write_text(json.dumps(rows, indent=2) + "\n")
    keys = ["run", f"{CATEGORY}_accuracy", "multiple_accuracy", "irrelevance_call_rate", "n_negatives"]
    keys += ["heldout_match", "mismatched_call_rate", "wall_seconds"]
    print("| " + " | ".join(keys) + " |\n|" + " --- |" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


def summarize(settings: Settings) -> None:
    reports = settings.reports_dir
    modes = {}
    for mode in ("base", "retrieval", "skill"):
        path = reports / f"bfcl-headline-{mode}.json"
        if path.exists():
            modes[mode] = json.loads(path.read_text())
    consolidation = json.loads((reports / "bfcl-headline-consolidation.json").read_text())
    for item in consolidation["consolidations"]:
        item.pop("losses", None)
        item.pop("episodes", None)
    others: dict[str, dict[str, Any]] = {category: {} for category in OTHER_CATEGORIES}
    for category, by_mode in others.items():
        for mode in modes:
            path = reports / f"bfcl-headline-{mode}-{category}.json"
            if path.exists():
                by_mode[mode] = json.loads(path.read_text())
    irrelevance = others["irrelevance"]
    summary = {
        "category": CATEGORY,
        "n_test": max(m["n"] for m in modes.values()),
        "n_train": consolidation["n_train_cases"],
        "modes": modes,
        "irrelevance": irrelevance,
        "multiple": others["multiple"],
        "side_by_side": {mode: side_by_side(mode, report, others) for mode, report in modes.items()},
        "consolidation": consolidation,
    }
    (reports / "bfcl-headline.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_demo(summary, reports / "bfcl-headline.png")
    print(json.dumps(summary["side_by_side"]))


def main(argv: list[str]) -> None:
    settings = Settings()
    Console().print(f"home {settings.home}")
    if argv[0] == "consolidate":
        state_optional = "--state-optional" in argv
        args = [a for a in argv[1:] if a != "--state-optional"]
        consolidate(settings, json.loads(args[0]) if args else {}, also=args[1:], state_optional=state_optional)
    elif argv[0] == "practice":
        practice_round(settings, int(argv[1]), json.loads(argv[2]) if len(argv) > 2 else {})
    elif argv[0] == "eval":
        limit = int(argv[2]) if len(argv) > 2 and int(argv[2]) > 0 else None
        run_eval(settings, argv[1], limit, argv[3] if len(argv) > 3 else CATEGORY)
    elif argv[0] == "compare":
        compare(argv[1:-1], argv[-1])
    else:
        summarize(settings)


if __name__ == "__main__":
    main(sys.argv[1:])
