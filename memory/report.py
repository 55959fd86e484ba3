"""What a consolidation did, measured: `ConsolidationReport`, written as JSON with a plot beside it.

A report is drafted into the candidate folder just before the commit (`ReportDraft`), so a run killed between the
commit and the writing of its report still gets it written, by the next run (see `memory.consolidate`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from memory.gate import Scores

DRAFT = "report-draft.json"  # in a candidate folder: the report of the revision about to be committed


class ConsolidationReport(BaseModel):
    """What one consolidation did, measured; also written to `<reports>/consolidation-<skill>-<rev>.json`."""

    skill: str
    created: bool
    revision: int | None
    parent: int | None
    promoted: bool
    reason: str
    episodes: list[str]
    n_train: int
    n_holdout: int
    n_replay: int
    n_negatives: int = Field(0, description="negative demonstrations trained on (memory.negatives)")
    n_mismatched: int = Field(0, description="held-out mismatched cases the gate asked (0: relevance check skipped)")
    notes: list[str] = Field(default_factory=list, description="what the recipe asked for but could not be built")
    candidate: Scores
    current: Scores
    losses: list[float] = Field(default_factory=list)
    train_seconds: float = 0.0
    train_tokens_per_second: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    report_path: str | None = None
    plot_path: str | None = None
    skipped: bool = Field(False, description="nothing was trained: `reason` says why (another process, a broken skill)")


class ReportDraft(BaseModel):
    """What a candidate folder keeps just before its commit, so a run that dies after it can still write the report."""

    report: ConsolidationReport
    data_hash: str


def skipped_report(skill: str, reason: str) -> ConsolidationReport:
    """The report of a consolidation that trained nothing (another process held the skill, the skill is broken)."""
    return ConsolidationReport(
        skill=skill,
        created=False,
        revision=None,
        parent=None,
        promoted=False,
        reason=reason,
        episodes=[],
        n_train=0,
        n_holdout=0,
        n_replay=0,
        candidate=Scores(),
        current=Scores(),
        skipped=True,
    )


def tried_report(
    skill: str, revision: int, parent: int | None, promoted: bool, episodes: list[str], wall_seconds: float
) -> ConsolidationReport:
    """The report of a rerun on data that `revision` was already trained on: nothing is trained again."""
    return ConsolidationReport(
        skill=skill,
        created=False,
        revision=revision,
        parent=parent,
        promoted=promoted,
        reason=f"already tried: revision {revision} was trained on exactly this data; not training again",
        episodes=episodes,
        n_train=0,
        n_holdout=0,
        n_replay=0,
        candidate=Scores(),
        current=Scores(),
        wall_seconds=wall_seconds,
    )


def write_report(report: ConsolidationReport, reports_dir: Path | None) -> ConsolidationReport:
    """Write `report` (JSON, and its plot when matplotlib is there) under `reports_dir`; the report with its paths.
    No folder: nothing is written."""
    if reports_dir is None:
        return report
    reports_dir.mkdir(parents=True, exist_ok=True)
    stem = f"consolidation-{report.skill}-{report.revision or 'none'}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    plot = reports_dir / f"{stem}.png"
    try:
        plot_report(report, plot)
        report = report.model_copy(update={"plot_path": str(plot)})
    except ImportError:  # matplotlib missing: the JSON still says everything
        pass
    path = reports_dir / f"{stem}.json"
    report = report.model_copy(update={"report_path": str(path)})
    path.write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
    return report


def plot_report(report: ConsolidationReport, path: Path) -> None:
    """Loss per step, and candidate vs current on each metric, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    left.plot(range(1, len(report.losses) + 1), report.losses, marker=".")
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    left.set_title(f"{report.skill}: training")
    names = ["heldout_match", "regression_match", "offtask_call_rate", "offtask_agreement", "mismatched_call_rate"]
    values = [(getattr(report.current, n) or 0.0, getattr(report.candidate, n) or 0.0) for n in names]
    xs = range(len(names))
    baseline = "base" if report.parent is None else f"revision {report.parent}"
    right.bar([x - 0.2 for x in xs], [v[0] for v in values], width=0.4, label=baseline)
    right.bar([x + 0.2 for x in xs], [v[1] for v in values], width=0.4, label="candidate")
    right.set_xticks(list(xs), [n.replace("_", "\n") for n in names], fontsize=8)
    right.set_ylim(0, 1.05)
    right.legend()
    verdict = "promoted" if report.promoted else "rejected"
    right.set_title(f"revision {report.revision}: {verdict}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
