"""The learning curve on BFCL: test-split accuracy vs demonstrations consolidated, for the three modes (slow).

For each count n (e.g. 0, 25, 50, 100, 194): the first n train cases are recorded as demonstrations; retrieval mode
is evaluated with them in the buffer; they are consolidated into a fresh skill `tool-habits-n<n>` (from the base, the
BFCL recipe); skill mode is evaluated with it. Base mode is evaluated once. Then, optionally, practice rounds with the
last skill (its successes consolidated into its next revision). Writes `reports/bfcl-curve.json` and `.png`.

    python -m agent.evals.curve [--counts 0,25,50,100,194] [--test N] [--practice-rounds R] [--recipe JSON]

(`make learning-curve` runs it on the whole test split.)"""

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

SKILL_PREFIX = "tool-habits-n"  # the skill trained on n demonstrations is tool-habits-n<n>


def plot_curve(result: dict[str, Any], path: Path) -> None:
    """Accuracy vs consolidated demonstrations, one line per mode. With no demonstrations retrieval and skill mode
    are the base, so their lines start at the base's point; a count whose candidate the gate rejected is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.9))
    points = result["points"]  # practice points carry on the skill line (x: episodes consolidated so far)
    base = [(p["episodes"], 100 * p["modes"]["base"]["accuracy"]) for p in points if "base" in p["modes"]]
    colors: dict[str, Any] = {}
    for mode in ("base", "retrieval", "skill"):
        line = [(p["episodes"], 100 * p["modes"][mode]["accuracy"]) for p in points if mode in p["modes"]]
        if mode != "base" and line and base:
            line = base[:1] + line
        if line:
            (drawn,) = ax.plot([x for x, _ in line], [y for _, y in line], marker="o", label=mode)
            colors[mode] = drawn.get_color()

    def note(text: str, x: float, y: float, dy: int) -> None:
        style = {"textcoords": "offset points", "ha": "center", "fontsize": 7, "color": colors.get("skill", "C2")}
        ax.annotate(text, (x, y), xytext=(0, dy), **style)

    for p in points:
        if "skill" not in p["modes"] and p.get("consolidation") and not p["consolidation"][0]["promoted"]:
            note("skill rejected\nby the gate", p["episodes"], 0, 4)
        if "practice_round" in p and "skill" in p["modes"]:
            solved = p["practice"]["solved"]
            y = 100 * p["modes"]["skill"]["accuracy"]
            note(f"practice round {p['practice_round']}\n(+{solved} successes)", p["episodes"], y, -24)
    ax.set_xlabel(
        "episodes consolidated: demonstrations, then practice successes (skill);\n"
        "demonstrations in the buffer (retrieval)"
    )
    ax.set_ylabel("accuracy on the test split (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"BFCL {result['category']}, {result['n_test']} test cases")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class _Curve:
    """One run of the curve: the agent and the test cases it is measured on, and the result, rewritten to `path`
    after every point (with the seconds since `started`)."""

    def __init__(
        self,
        agent: Any,
        console: Console,
        category: str,
        test: list[Any],
        result: dict[str, Any],
        path: Path,
        started: float,
    ) -> None:
        self.agent, self.console, self.category, self.test = agent, console, category, test
        self.result, self.path, self.started = result, path, started

    def measure(self, mode: str, **kwargs: Any) -> dict[str, Any]:
        from agent.evals.bfcl.harness import evaluate

        report = evaluate(self.agent, self.category, "test", mode=mode, cases=self.test, **kwargs)
        self.console.print(
            f"  {mode}: {report.accuracy:.1%} ({report.correct}/{report.n}), {report.prompt_tokens_mean:.0f} tokens"
        )
        return report.summary()

    def consolidate(self, skill: str, point: dict[str, Any]) -> None:
        """Consolidate the waiting episodes into `skill`; measure it in skill mode if it exists then."""
        reports = self.agent.consolidate(skill, min_episodes=1)
        point["consolidation"] = [r.model_dump(mode="json", exclude={"losses", "episodes"}) for r in reports]
        point["train_seconds"] = round(sum(r.train_seconds for r in reports), 1)
        if self.agent.store.exists(skill):
            point["modes"]["skill"] = self.measure("skill", skill=skill) | {
                "revision": self.agent.store.get(skill).current
            }

    def save(self, point: dict[str, Any]) -> None:
        self.result["points"].append(point)
        self.result["wall_seconds"] = round(time.perf_counter() - self.started, 1)
        self.path.write_text(json.dumps(self.result, indent=2) + "\n")


def _demonstration_points(curve: _Curve, counts: Sequence[int], train: list[Any], k: int) -> tuple[str | None, int]:
    """A point per count: base mode at 0, else retrieval with the first `count` demonstrations and the skill
    consolidated from them. Returns the last skill and how many episodes it was trained on."""
    from agent.evals.bfcl.recipe import fresh_demonstrations

    agent, skill, consolidated = curve.agent, None, 0
    for count in counts:
        count = min(count, len(train))
        curve.console.rule(f"{count} demonstrations")
        point: dict[str, Any] = {"episodes": count, "modes": {}}
        if count == 0:
            point["modes"]["base"] = curve.measure("base")
        else:
            fresh_demonstrations(agent, train[:count])
            point["modes"]["retrieval"] = curve.measure("retrieval", k=k)
            skill, consolidated = f"{SKILL_PREFIX}{count}", count
            if agent.store.exists(skill):
                agent.store.delete(skill)
            curve.consolidate(skill, point)
        curve.save(point)
    return skill, consolidated


def _practice_points(
    curve: _Curve, train: list[Any], skill: str | None, consolidated: int, rounds: int, attempts: int
) -> None:
    """A point per practice round with `skill` active: its successes consolidated into its next revision."""
    from agent.evals.bfcl.practice import practice

    agent = curve.agent
    for round_ in range(1, rounds + 1):
        if skill is None or not agent.store.exists(skill):
            curve.console.print("[yellow]no skill to practise with; practice rounds skipped[/yellow]")
            break
        curve.console.rule(f"practice round {round_} with {skill}")
        agent.buffer.discard([t.id for t in agent.buffer.list(consolidated=False, instance=agent.instance)])
        summary = practice(agent, train, attempts=attempts, skill=skill)
        curve.console.print(f"  solved {summary.solved}/{summary.cases} train cases in {summary.attempts} samples")
        consolidated += summary.solved
        point: dict[str, Any] = {
            "episodes": consolidated,
            "practice_round": round_,
            "practice": summary.model_dump(),
            "modes": {},
        }
        point["practice"].pop("episode_ids")
        if summary.solved:
            curve.consolidate(skill, point)
        curve.save(point)


def run_curve(
    settings: Settings,
    counts: Sequence[int] = (0, 25, 50, 100, 194),
    *,
    n_test: int | None = None,
    category: str = "simple_python",
    k: int = 3,
    practice_rounds: int = 0,
    attempts: int = 2,
    recipe: dict[str, Any] | None = None,
    agent: Any = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Measure the curve; returns what is written to `reports/bfcl-curve.json` (rewritten after every point, so an
    interrupted run keeps what it measured).

    After the counts, each of `practice_rounds` samples the train split with the last skill active (`attempts` per
    case, BFCL's checker as the judge), consolidates the successes into a new revision of that skill and measures
    it again: the loop's second half, demonstrations then practice.
    """
    from agent.evals.bfcl.recipe import experiment_agent

    console = console or Console()
    started = time.perf_counter()
    agent = experiment_agent(settings, agent, recipe)
    test = load_cases(settings.home, category, "test", limit=n_test)
    train = load_cases(settings.home, category, "train")
    result: dict[str, Any] = {
        "category": category,
        "n_test": len(test),
        "k": k,
        "recipe": agent.consolidation.model_dump(mode="json"),
        "points": [],
    }
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / "bfcl-curve.json"
    curve = _Curve(agent, console, category, test, result, path, started)
    skill, consolidated = _demonstration_points(curve, counts, train, k)
    _practice_points(curve, train, skill, consolidated, practice_rounds, attempts)
    plot_curve(result, settings.reports_dir / "bfcl-curve.png")
    console.print(f"report: {path}\nplot:   {settings.reports_dir / 'bfcl-curve.png'}")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--counts", default="0,25,50,100,194", help="demonstration counts, comma-separated")
    parser.add_argument("--test", type=int, default=None, help="test cases (default: the whole test split)")
    parser.add_argument("--category", default="simple_python")
    parser.add_argument("--practice-rounds", type=int, default=0, help="practice rounds after the last count")
    parser.add_argument("--recipe", default="{}", help="consolidation overrides as JSON, e.g. '{\"epochs\": 4}'")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    run_curve(
        Settings(),
        counts,
        n_test=args.test,
        category=args.category,
        practice_rounds=args.practice_rounds,
        recipe=json.loads(args.recipe),
    )


if __name__ == "__main__":
    main()
