"""The BFCL memory report: every (scenario, mode) row as JSON, a plot beside it, and a markdown table for the README.

The plot has two panels: accuracy per scenario and mode (grouped bars, the control as a lighter hatched bar in front
of each, so the gap between the two is what the memory adds over chance), and the mean prompt length per mode (what
each way of remembering costs at every question).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.evals.memory.harness import MODES, MemoryEvalReport
from agent.evals.memory.isolation import LeakCell
from skills.files import atomic_write_bytes

REPORT_STEM = "memory-eval"


class MemoryReportFiles(BaseModel):
    """Where the report went: the JSON, and the plot (None without matplotlib, or with nothing measured)."""

    json_path: str
    png_path: str | None = None


def report_payload(reports: Sequence[MemoryEvalReport], isolation: Sequence[LeakCell] = ()) -> dict[str, Any]:
    """The JSON of the report: every row, the leak matrix if it was measured, and when."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": [r.summary() for r in reports],
        "isolation": [c.model_dump(mode="json") for c in isolation],
    }


def write_memory_report(
    reports: Sequence[MemoryEvalReport],
    reports_dir: Path,
    *,
    isolation: Sequence[LeakCell] = (),
    stem: str = REPORT_STEM,
) -> MemoryReportFiles:
    """Write `<reports_dir>/<stem>.json` (atomically) and `<stem>.png` beside it (when matplotlib is there)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"{stem}.json"
    atomic_write_bytes(path, (json.dumps(report_payload(reports, isolation), indent=2) + "\n").encode())
    plot = reports_dir / f"{stem}.png"
    measured = [r for r in reports if not r.skipped]
    if not measured:
        return MemoryReportFiles(json_path=str(path))
    try:
        plot_memory_report(measured, plot)
    except ImportError:  # matplotlib missing: the JSON still says everything
        return MemoryReportFiles(json_path=str(path))
    return MemoryReportFiles(json_path=str(path), png_path=str(plot))


def plot_memory_report(reports: Sequence[MemoryEvalReport], path: Path) -> None:
    """Accuracy per scenario x mode (control hatched in front), and mean prompt tokens per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r.scenario for r in reports))
    modes = [m for m in MODES if any(r.mode == m for r in reports)]
    cell = {(r.scenario, r.mode): r for r in reports}
    width = 0.8 / len(modes)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    colours = plt.get_cmap("tab10")
    for m, mode in enumerate(modes):
        xs = [s + (m - (len(modes) - 1) / 2) * width for s in range(len(scenarios))]
        rows = [cell.get((scenario, mode)) for scenario in scenarios]
        left.bar(xs, [r.accuracy if r else 0.0 for r in rows], width=width, color=colours(m), label=mode)
        left.bar(
            xs,
            [r.control_accuracy if r else 0.0 for r in rows],
            width=width * 0.6,
            color="white",
            alpha=0.7,
            hatch="//",
            edgecolor=colours(m),
            label="control" if m == 0 else None,
        )
    left.set_xticks(range(len(scenarios)), scenarios)
    left.set_ylim(0, 1.05)
    left.set_ylabel("accuracy (BFCL memory)")
    left.legend(fontsize=8)
    left.set_title("answers from memory (hatched: control, another question's answers)")
    tokens = [
        sum(r.prompt_tokens_mean for r in reports if r.mode == m) / sum(r.mode == m for r in reports) for m in modes
    ]
    right.bar(range(len(modes)), tokens, color=[colours(m) for m in range(len(modes))])
    right.set_xticks(range(len(modes)), [m.replace("+", "+\n") for m in modes], fontsize=8)
    right.set_ylabel("prompt tokens (mean)")
    right.set_title("what each mode costs per question")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_table(reports: Sequence[MemoryEvalReport]) -> str:
    """The rows as the README's markdown table; a skipped row says so in place of its numbers."""
    lines = [
        "| scenario | mode | n | accuracy | control | prompt tok | answer tok | s/q |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in reports:
        if r.skipped:
            lines.append(f"| {r.scenario} | {r.mode} | - | skipped: {r.reason} | | | | |")
            continue
        lines.append(
            f"| {r.scenario} | {r.mode} | {r.n} | {r.accuracy:.1%} | {r.control_accuracy:.1%} | "
            f"{r.prompt_tokens_mean:.0f} | {r.answer_tokens_mean:.1f} | "
            f"{f'{r.seconds_per_question:.2f}' if r.seconds_per_question else '-'} |"  # 0: not timed
        )
    return "\n".join(lines) + "\n"
