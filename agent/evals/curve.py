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
    from agent.evals.bfcl.harness import evaluate
    from agent.evals.bfcl.practice import practice
    from agent.evals.bfcl.recipe import experiment_agent, fresh_demonstrations

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

    def measure(mode: str, **kwargs: Any) -> dict[str, Any]:
        report = evaluate(agent, category, "test", mode=mode, cases=test, **kwargs)
        console.print(
            f"  {mode}: {report.accuracy:.1%} ({report.correct}/{report.n}), {report.prompt_tokens_mean:.0f} tokens"
        )
        return report.summary()

    def consolidate(skill: str, point: dict[str, Any]) -> None:
        reports = agent.consolidate(skill, min_episodes=1)
        point["consolidation"] = [r.model_dump(mode="json", exclude={"losses", "episodes"}) for r in reports]
        point["train_seconds"] = round(sum(r.train_seconds for r in reports), 1)
        if agent.store.exists(skill):
            point["modes"]["skill"] = measure("skill", skill=skill) | {"revision": agent.store.get(skill).current}

    def save(point: dict[str, Any]) -> None:
        result["points"].append(point)
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(result, indent=2) + "\n")

    skill, consolidated = None, 0
    for count in counts:
        count = min(count, len(train))
        console.rule(f"{count} demonstrations")
        point: dict[str, Any] = {"episodes": count, "modes": {}}
        if count == 0:
            point["modes"]["base"] = measure("base")
        else:
            fresh_demonstrations(agent, train[:count])
            point["modes"]["retrieval"] = measure("retrieval", k=k)
            skill, consolidated = f"{SKILL_PREFIX}{count}", count
            if agent.store.exists(skill):
                agent.store.delete(skill)
            consolidate(skill, point)
        save(point)

    for round_ in range(1, practice_rounds + 1):
        if skill is None or not agent.store.exists(skill):
            console.print("[yellow]no skill to practise with; practice rounds skipped[/yellow]")
            break
        console.rule(f"practice round {round_} with {skill}")
        agent.buffer.discard([t.id for t in agent.buffer.list(consolidated=False)])
        summary = practice(agent, train, attempts=attempts, skill=skill)
        console.print(f"  solved {summary.solved}/{summary.cases} train cases in {summary.attempts} samples")
        consolidated += summary.solved
        point = {"episodes": consolidated, "practice_round": round_, "practice": summary.model_dump(), "modes": {}}
        point["practice"].pop("episode_ids")
        if summary.solved:
            consolidate(skill, point)
        save(point)

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
