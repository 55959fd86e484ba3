"""Forgetting and composition on BFCL: one skill continued on a second category, and a second skill composed with it.

Starting from `tool-habits` consolidated from simple_python's train demonstrations (consolidated here first if the
store lacks it), each model is measured on the test cases of both categories (simple_python and multiple):
1. before: `tool-habits` at its current revision;
2. a second skill, `multiple-habits`, consolidated from the base on `multiple`'s train demonstrations alone;
3. the two composed, `tool-habits@<before>+multiple-habits` (their sum, see skills.compose);
4. after: the same `multiple` demonstrations continue `tool-habits` into its next revision (gated as usual; measured
   pinned, promoted or not): did it learn `multiple` without forgetting simple_python?
Writes `reports/bfcl-transfer.json` (rewritten after every measurement) and `.png`.

    python -m agent.evals.transfer [--test N] [--recipe JSON]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from agent.config import Settings
from agent.evals.bfcl.data import load_cases

FIRST, SECOND = "simple_python", "multiple"
SKILL, OTHER = "tool-habits", "multiple-habits"


def plot_transfer(result: dict[str, Any], path: Path) -> None:
    """Accuracy per model, one group of bars per category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(result["models"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(1, len(models))
    for index, model in enumerate(models):
        scores = result["models"][model]["accuracy"]
        xs = [c + (index - (len(models) - 1) / 2) * width for c in range(len(result["categories"]))]
        ax.bar(xs, [100 * scores.get(c, 0.0) for c in result["categories"]], width=width, label=model)
    ax.set_xticks(range(len(result["categories"])), result["categories"])
    ax.set_ylabel("accuracy on the test split (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"BFCL: forgetting and composition ({result['n_test']} test cases per category)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class _Transfer:
    """One run: the agent, each category's test and train cases, and the result, rewritten to `path` after every
    measurement (with the seconds since `started`)."""

    def __init__(
        self,
        agent: Any,
        console: Console,
        test: dict[str, list[Any]],
        train: dict[str, list[Any]],
        result: dict[str, Any],
        path: Path,
        started: float,
    ) -> None:
        self.agent, self.console, self.test, self.train = agent, console, test, train
        self.result, self.path, self.started = result, path, started

    def save(self) -> None:
        self.result["wall_seconds"] = round(time.perf_counter() - self.started, 1)
        self.path.write_text(json.dumps(self.result, indent=2) + "\n")

    def measure(self, label: str, skill: str) -> None:
        """`skill` (a name, NAME@REV or A+B) in skill mode on every category's test cases, recorded as `label`."""
        from agent.evals.bfcl.harness import evaluate

        entry: dict[str, Any] = {"skill": skill, "accuracy": {}, "correct": {}, "prompt_tokens_mean": {}}
        for category, cases in self.test.items():
            report = evaluate(self.agent, category, "test", mode="skill", skill=skill, cases=cases)
            entry["accuracy"][category] = report.accuracy
            entry["correct"][category] = f"{report.correct}/{report.n}"
            entry["prompt_tokens_mean"][category] = round(report.prompt_tokens_mean, 1)
            self.console.print(
                f"  {label} ({skill}) on {category}: {report.accuracy:.1%} ({report.correct}/{report.n})"
            )
        self.result["models"][label] = entry
        self.save()

    def consolidate(self, label: str, skill: str, category: str) -> None:
        """`category`'s train demonstrations (alone in the buffer) consolidated into `skill`, recorded as `label`."""
        from agent.evals.bfcl.recipe import fresh_demonstrations

        fresh_demonstrations(self.agent, self.train[category])
        reports = self.agent.consolidate(skill, min_episodes=1)
        self.result["consolidations"][label] = [
            r.model_dump(mode="json", exclude={"losses", "episodes"}) for r in reports
        ]
        for r in reports:
            self.console.print(f"  {skill}@{r.revision}: {r.reason} ({r.train_seconds:.0f} s training)")
        self.save()


def _steps(run: _Transfer) -> None:
    """The four steps (and, first, `tool-habits` itself if the store lacks it)."""
    agent, console, train = run.agent, run.console, run.train
    if not agent.store.exists(SKILL):
        console.rule(f"{SKILL} from {len(train[FIRST])} {FIRST} demonstrations")
        run.consolidate("first", SKILL, FIRST)
    before = agent.store.get(SKILL).current
    console.rule(f"1. before: {SKILL}@{before}")
    run.measure("before", f"{SKILL}@{before}")

    console.rule(f"2. {OTHER} from {len(train[SECOND])} {SECOND} demonstrations, from the base")
    if agent.store.exists(OTHER):
        agent.store.delete(OTHER)
    run.consolidate("second", OTHER, SECOND)
    if agent.store.exists(OTHER):
        run.measure("second alone", OTHER)
        console.rule("3. composed")
        run.measure("composed", f"{SKILL}@{before}+{OTHER}")

    console.rule(f"4. {SKILL} continued on {SECOND}")
    run.consolidate("continued", SKILL, SECOND)
    after = max(agent.store.get(SKILL).revision_numbers())
    if after != before:
        run.measure("after", f"{SKILL}@{after}")


def run_transfer(
    settings: Settings,
    *,
    n_test: int | None = None,
    recipe: dict[str, Any] | None = None,
    agent: Any = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the four steps; returns what is written to `reports/bfcl-transfer.json`."""
    from agent.evals.bfcl.recipe import experiment_agent

    console = console or Console()
    started = time.perf_counter()
    agent = experiment_agent(settings, agent, recipe)
    categories = (FIRST, SECOND)
    test = {c: load_cases(settings.home, c, "test", limit=n_test) for c in categories}
    train = {c: load_cases(settings.home, c, "train") for c in categories}
    result: dict[str, Any] = {
        "categories": list(categories),
        "n_test": n_test,
        "n_train": {c: len(cases) for c, cases in train.items()},
        "recipe": agent.consolidation.model_dump(mode="json"),
        "models": {},
        "consolidations": {},
    }
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / "bfcl-transfer.json"
    run = _Transfer(agent, console, test, train, result, path, started)
    _steps(run)
    models = result["models"]
    result["forgetting_points"] = (
        round(100 * (models["before"]["accuracy"][FIRST] - models["after"]["accuracy"][FIRST]), 1)
        if "after" in models
        else None
    )
    run.save()
    plot_transfer(result, settings.reports_dir / "bfcl-transfer.png")
    console.print(f"report: {path}\nplot:   {settings.reports_dir / 'bfcl-transfer.png'}")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--test", type=int, default=None, help="test cases per category (default: all)")
    parser.add_argument("--recipe", default="{}", help="consolidation overrides as JSON")
    args = parser.parse_args(argv)
    run_transfer(Settings(), n_test=args.test, recipe=json.loads(args.recipe))


if __name__ == "__main__":
    main()
