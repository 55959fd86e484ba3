"""Scale down, the paper's second axis: the same consolidation at several LoRA shapes, accuracy vs adapter bytes.

Each shape (rank r on all linear layers, or on the attention projections only) consolidates the same train-split
demonstrations into a fresh skill `tool-habits-<shape>` from the base, with the BFCL recipe, and is measured in skill
mode on the same test cases. A shape the gate rejects is not created and has no accuracy; `--recipe '{"margin": 1}'`
measures every shape, and each point keeps what the gate saw (held-out match, off-task call rate).
Writes `reports/bfcl-sweep.json` (rewritten after every shape) and `.png`.

    python -m agent.evals.sweep [--ranks 1,2,4,8,16] [--attention-ranks 8] [--test N] [--train N] [--recipe JSON]
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
from skills.files import ADAPTER_WEIGHTS
from skills.manifest import LoraSpec

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def shapes(ranks: Sequence[int], attention_ranks: Sequence[int]) -> list[tuple[str, LoraSpec]]:
    """(label, spec) per shape; alpha = 2r throughout, so the update's scale (alpha / r) is the same for all."""
    out = [(f"r{r}-all", LoraSpec(r=r, alpha=2 * r)) for r in ranks]
    out += [(f"r{r}-attn", LoraSpec(r=r, alpha=2 * r, target_modules=ATTENTION)) for r in attention_ranks]
    return out


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    """Accuracy, and the candidate's off-task call rate as the gate saw it, vs adapter size (log scale): a small
    shape can learn the call format and still call tools where it should not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.2), sharex=True, height_ratios=(3, 2))
    for targets, marker in (("all", "o"), ("attn", "s")):
        points = [p for p in result["points"] if p["targets"] == targets and p.get("accuracy") is not None]
        points.sort(key=lambda p: p["adapter_bytes"])
        if not points:
            continue
        xs = [p["adapter_bytes"] / 1e6 for p in points]
        label = "all linear layers" if targets == "all" else "attention only"
        accuracy = [100 * p["accuracy"] for p in points]
        offtask = [100 * p["gate"][-1]["offtask_call_rate"] if p.get("gate") else float("nan") for p in points]
        top.plot(xs, accuracy, marker=marker, label=label)
        bottom.plot(xs, offtask, marker=marker, label=label)
        for p, x, y in zip(points, xs, accuracy, strict=True):
            top.annotate(f"r={p['r']}", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
    top.set_ylim(0, 100)
    top.set_ylabel("test accuracy (%)")
    top.set_title(f"BFCL {result['category']}: {result['n_train']} demonstrations, {result['n_test']} test cases")
    top.legend(loc="lower right")
    bottom.set_ylim(-5, 105)
    bottom.set_ylabel("off-task calls (%)")
    bottom.set_xscale("log")
    bottom.xaxis.set_major_formatter(ScalarFormatter())
    bottom.xaxis.set_minor_formatter(ScalarFormatter())
    bottom.tick_params(axis="x", which="minor", labelsize=7)
    bottom.set_xlabel("adapter size (MB, fp32 safetensors)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_sweep(
    settings: Settings,
    ranks: Sequence[int] = (1, 2, 4, 8, 16),
    attention_ranks: Sequence[int] = (8,),
    *,
    n_test: int | None = None,
    n_train: int | None = None,
    category: str = "simple_python",
    recipe: dict[str, Any] | None = None,
    agent: Any = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Measure every shape; returns what is written to `reports/bfcl-sweep.json`."""
    from agent.evals.bfcl.harness import evaluate
    from agent.evals.bfcl.recipe import bfcl_consolidation, experiment_agent, fresh_demonstrations

    console = console or Console()
    started = time.perf_counter()
    agent = experiment_agent(settings, agent, recipe)
    test = load_cases(settings.home, category, "test", limit=n_test)
    train = load_cases(settings.home, category, "train", limit=n_train)
    result: dict[str, Any] = {
        "category": category,
        "n_test": len(test),
        "n_train": len(train),
        "recipe": agent.consolidation.model_dump(mode="json", exclude={"lora"}),
        "points": [],
    }
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / "bfcl-sweep.json"
    for label, spec in shapes(ranks, attention_ranks):
        console.rule(f"{label}: r={spec.r} on {', '.join(spec.target_modules)}")
        skill = f"tool-habits-{label}"
        if agent.store.exists(skill):
            agent.store.delete(skill)
        agent.consolidation = bfcl_consolidation(**(recipe or {}) | {"lora": spec})
        fresh_demonstrations(agent, train)
        reports = agent.consolidate(skill, min_episodes=1)
        point: dict[str, Any] = {
            "shape": label,
            "r": spec.r,
            "targets": label.split("-")[1],
            "target_modules": list(spec.target_modules),
            "train_seconds": round(sum(r.train_seconds for r in reports), 1),
            "train_tokens_per_second": round(sum(r.train_tokens_per_second for r in reports), 1),
            "promoted": any(r.promoted for r in reports),
            # what the gate judged (with a margin of 1.0 it promotes every shape, and these say what it saw)
            "gate": [r.candidate.model_dump() | {"reason": r.reason} for r in reports],
            "accuracy": None,
        }
        if agent.store.exists(skill):
            point["adapter_bytes"] = (agent.store.revision_dir(skill) / ADAPTER_WEIGHTS).stat().st_size
            report = evaluate(agent, category, "test", mode="skill", skill=skill, cases=test)
            point |= {"accuracy": report.accuracy, "correct": report.correct, "n": report.n}
            console.print(
                f"  {report.accuracy:.1%} ({report.correct}/{report.n}), {point['adapter_bytes'] / 1e6:.2f} MB, "
                f"trained in {point['train_seconds']:.0f} s"
            )
        else:
            console.print(f"  not created: {reports[0].reason if reports else 'nothing consolidated'}")
        result["points"].append(point)
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        path.write_text(json.dumps(result, indent=2) + "\n")
    plot_sweep(result, settings.reports_dir / "bfcl-sweep.png")
    console.print(f"report: {path}\nplot:   {settings.reports_dir / 'bfcl-sweep.png'}")
    return result


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ranks", default="1,2,4,8,16", help="ranks on all linear layers, comma-separated")
    parser.add_argument("--attention-ranks", default="8", help="ranks on q,k,v,o only, comma-separated (or empty)")
    parser.add_argument("--test", type=int, default=None, help="test cases (default: the whole test split)")
    parser.add_argument("--train", type=int, default=None, help="demonstrations (default: the whole train split)")
    parser.add_argument("--category", default="simple_python")
    parser.add_argument("--recipe", default="{}", help="consolidation overrides as JSON")
    args = parser.parse_args(argv)
    run_sweep(
        Settings(),
        _ints(args.ranks),
        _ints(args.attention_ranks),
        n_test=args.test,
        n_train=args.train,
        category=args.category,
        recipe=json.loads(args.recipe),
    )


if __name__ == "__main__":
    main()
