"""The learning curve on BFCL: test-split accuracy vs demonstrations consolidated, for the three modes (slow).

For each count n (e.g. 0, 25, 50, 100, 194): the first n train cases are recorded as demonstrations; retrieval mode
is evaluated with them in the buffer; they are consolidated into a fresh skill `tool-habits-n<n>` (from the base, the
demo's recipe); skill mode is evaluated with it. Base mode is evaluated once. Writes `reports/bfcl-curve.json` and
`.png`. `python -m agent.evals.curve [--counts 0,25,50,100,194] [--test N]` (`make learning-curve` runs it in full).
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
from agent.evals.data import load_cases


def plot_curve(result: dict[str, Any], path: Path) -> None:
    """Accuracy vs consolidated demonstrations, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    points = result["points"]
    for mode in ("base", "retrieval", "skill"):
        xs = [p["episodes"] for p in points if mode in p["modes"]]
        ys = [100 * p["modes"][mode]["accuracy"] for p in points if mode in p["modes"]]
        if xs:
            ax.plot(xs, ys, marker="o", label=mode)
    ax.set_xlabel("demonstrations consolidated (skill) / in the buffer (retrieval)")
    ax.set_ylabel("accuracy on the test split (%)")
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
    console: Console | None = None,
) -> dict[str, Any]:
    """Measure the curve; returns what is written to `reports/bfcl-curve.json`."""
    from agent.api import Agent
    from agent.base import load_base
    from agent.demo import MAX_NEW_TOKENS, bfcl_consolidation
    from agent.evals.harness import evaluate
    from agent.evals.practice import record_demonstrations

    console = console or Console()
    started = time.perf_counter()
    base = load_base(settings=settings)
    agent = Agent(  # the agent builds the store, the residency and the local model on `base` itself
        settings=settings,
        base=base,
        tools=[],
        max_steps=1,
        max_new_tokens=MAX_NEW_TOKENS,
        consolidation=bfcl_consolidation(),
    )
    test = load_cases(settings.home, category, "test", limit=n_test)
    train = load_cases(settings.home, category, "train")

    def measure(mode: str, **kwargs: Any) -> dict[str, Any]:
        report = evaluate(agent, category, "test", mode=mode, cases=test, **kwargs)
        console.print(
            f"  {mode}: {report.accuracy:.1%} ({report.correct}/{report.n}), {report.prompt_tokens_mean:.0f} tokens"
        )
        return report.summary()

    points = []
    for count in counts:
        count = min(count, len(train))
        console.rule(f"{count} demonstrations")
        agent.buffer.discard([t.id for t in agent.buffer.list(consolidated=False)])
        point: dict[str, Any] = {"episodes": count, "modes": {}}
        if count == 0:
            point["modes"]["base"] = measure("base")
        else:
            record_demonstrations(agent, train[:count])
            point["modes"]["retrieval"] = measure("retrieval", k=k)
            skill = f"tool-habits-n{count}"
            if agent.store.exists(skill):
                agent.store.delete(skill)
            reports = agent.consolidate(skill, min_episodes=1)
            point["consolidation"] = [r.model_dump(mode="json", exclude={"losses"}) for r in reports]
            if agent.store.exists(skill):
                point["modes"]["skill"] = measure("skill", skill=skill)
        points.append(point)
    result = {
        "category": category,
        "n_test": len(test),
        "k": k,
        "points": points,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / "bfcl-curve.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    plot_curve(result, settings.reports_dir / "bfcl-curve.png")
    console.print(f"report: {path}\nplot:   {settings.reports_dir / 'bfcl-curve.png'}")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--counts", default="0,25,50,100,194", help="demonstration counts, comma-separated")
    parser.add_argument("--test", type=int, default=None, help="test cases (default: the whole test split)")
    parser.add_argument("--category", default="simple_python")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    run_curve(Settings(), counts, n_test=args.test, category=args.category)


if __name__ == "__main__":
    main()
