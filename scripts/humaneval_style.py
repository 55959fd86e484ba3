"""Collect the runs of scripts/humaneval_style.sh into docs/humaneval-style.json and a plot (docs/humaneval-style.png).

    python scripts/humaneval_style.py OUT_DIR [--docs docs]

Reads OUT_DIR/learn.json (what learn-style did), he-{base,retrieval,skill,composed}.json (`habitloop eval humaneval
--json`) and bfcl-{habits,composed}.json (`habitloop eval bfcl --json`); writes nothing but the two docs files.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from agent.evals.humaneval.data import Problem, load_problems
from agent.evals.humaneval.harness import program
from agent.evals.humaneval.sandbox import check_many
from memory.style import family_of

MODES = ("base", "retrieval", "skill", "composed")
LABELS = {
    "base": "base",
    "retrieval": "retrieval (k=3)",
    "skill": "python-style",
    "composed": "tool-habits+python-style",
}


def read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() and path.stat().st_size else None


def rescore(cases: list[dict[str, Any]], problems: dict[str, Problem]) -> dict[str, float]:
    """pass@1 of the stored code, run again both ways: as the harness runs it (annotations postponed) and plain
    (annotations evaluated when the function is defined, as first measured)."""
    chosen = [(problems[c["task_id"]], c["code"]) for c in cases]
    postponed = check_many([(program(p, code), p.test, p.entry_point) for p, code in chosen], timeout=10)
    plain = check_many(
        [("\n\n\n".join(x for x in (p.preamble, p.helpers, code) if x), p.test, p.entry_point) for p, code in chosen],
        timeout=10,
    )
    n = len(cases)
    return {
        "pass_at_1": sum(v.passed for v in postponed) / n,
        "pass_at_1_plain_annotations": sum(v.passed for v in plain) / n,
        "errors": sum(v.status == "error" for v in postponed) / n,
    }


def collect(out: Path) -> dict[str, Any]:
    learn = read(out / "learn.json") or {}
    modes = {m: r for m in MODES if (r := read(out / f"he-{m}.json")) is not None}
    problems = {p.task_id: p for p in load_problems(out / "skill", "test")} if modes else {}
    for mode, run in modes.items():  # counted again from the per-problem lines, by today's rule families
        cases = [json.loads(line) for line in (out / f"he-{mode}.jsonl").read_text().splitlines()]
        families = Counter(family_of(code) for case in cases for code in case["violations"])
        run["violations_per_function"] = {f: c / len(cases) for f, c in sorted(families.items())}
        run.update(rescore(cases, problems))
    bfcl = {m: r for m in ("habits", "composed") if (r := read(out / f"bfcl-{m}.json")) is not None}
    summary: dict[str, Any] = {
        "command": "scripts/humaneval_style.sh SOURCE TOOL_HABITS_HOME OUT && python scripts/humaneval_style.py OUT",
        "source": {k: learn.get(k) for k in ("path", "commit", "package", "version", "files")},
        "rules": learn.get("rules"),
        "learned": {k: learn.get(k) for k in ("functions", "in_style", "demonstrations")},
        "consolidation": {
            k: (learn.get("consolidation") or {}).get(k)
            for k in ("promoted", "reason", "n_train", "n_holdout", "n_replay", "train_seconds", "wall_seconds")
        },
        "humaneval": {
            m: {
                k: r.get(k)
                for k in (
                    "n",
                    "split",
                    "style_rate",
                    "pass_at_1",
                    "pass_at_1_plain_annotations",
                    "errors",
                    "violations_per_function",
                    "prompt_tokens_mean",
                    "seconds_per_case",
                    "skill",
                    "k",
                )
            }
            for m, r in modes.items()
        },
        "bfcl_simple_first64": {
            m: {k: r.get(k) for k in ("n", "correct", "accuracy", "skill")} for m, r in bfcl.items()
        },
    }
    if {"skill", "composed"} <= set(modes):
        summary["composition_style_rate_delta"] = modes["composed"]["style_rate"] - modes["skill"]["style_rate"]
    if {"habits", "composed"} <= set(bfcl):
        summary["composition_bfcl_delta"] = bfcl["composed"]["accuracy"] - bfcl["habits"]["accuracy"]
    return summary


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if m in summary["humaneval"]]
    runs = [summary["humaneval"][m] for m in modes]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = range(len(modes))
    width = 0.38
    left.bar([x - width / 2 for x in xs], [100 * r["style_rate"] for r in runs], width, label="style rate")
    left.bar([x + width / 2 for x in xs], [100 * r["pass_at_1"] for r in runs], width, label="pass@1")
    for x, r in zip(xs, runs, strict=True):
        left.text(x, 2 + 100 * max(r["style_rate"], r["pass_at_1"]), f"{r['prompt_tokens_mean']:.0f} tok", ha="center")
    left.set_xticks(list(xs), [LABELS[m] for m in modes], rotation=12)
    left.set_ylabel(f"% of HumanEval test problems (n={runs[0]['n']})")
    left.set_ylim(0, 105)
    left.set_title("in the repository's ruff style / passing the tests")
    left.legend()
    families = sorted({f for r in runs for f in r["violations_per_function"]})
    bottom = [0.0] * len(modes)
    for family in families:
        values = [r["violations_per_function"].get(family, 0.0) for r in runs]
        right.bar(list(xs), values, 0.6, bottom=bottom, label=family)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    right.set_xticks(list(xs), [LABELS[m] for m in modes], rotation=12)
    right.set_ylabel("violations per function")
    right.set_title("by rule family")
    right.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    args = parser.parse_args()
    summary = collect(args.out)
    (args.docs / "humaneval-style.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary["humaneval"]:
        plot(summary, args.docs / "humaneval-style.png")
    print(json.dumps({k: summary[k] for k in ("humaneval", "bfcl_simple_first64")}, indent=2))


if __name__ == "__main__":
    main()
