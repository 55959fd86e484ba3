"""`habitloop demo`: the tool-calling habit moves from context into weights, measured on BFCL. Nothing is simulated.

On the real base (SmolLM2-135M-Instruct), with a budget that fits in ~15 minutes on 2 cores (16 test cases, 32
demonstrations: measured on a shared, loaded 2-core machine; the README has the numbers):
1. evaluate the base on a slice of BFCL simple_python's test split (each case's functions are the tools; the first
   call in the reply is judged by BFCL's AST rules);
2. record demonstrations from the train split (each case's ground-truth call, with the case's own tools in the
   system prompt) as successful episodes in the buffer (chromadb);
3. evaluate retrieval mode: the k most similar demonstrations shown as worked examples in the prompt;
4. consolidate the buffered demonstrations into the skill `tool-habits` (LoRA on all linear layers, replay of the
   base's own answers to unrelated prompts, gated against what it replaces on held-out episodes);
5. optionally, one practice round on more train cases with the skill active (BFCL's checker as the judge) and a
   second consolidation;
6. evaluate skill mode (the skill active, no examples), print the table, write JSON + PNG under reports/.
Then the second act (`agent.evals.memory.demo`): one dev user of BFCL memory tells the agent about their week, and
their questions are answered cold by the base, by retrieval and by their consolidated memory adapter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.api import Agent
from agent.base import load_base
from agent.config import Settings
from agent.evals.bfcl.data import BfclCase, load_cases
from agent.evals.bfcl.harness import CaseResult, EvalReport, Mode, evaluate
from agent.evals.bfcl.practice import practice, record_demonstrations
from agent.evals.bfcl.recipe import CATEGORY, SKILL, bfcl_agent
from memory.consolidate import ConsolidationReport


class _Bar:
    """A rich progress bar for one evaluation: cases done, correct so far, elapsed."""

    def __init__(self, console: Console, label: str, total: int) -> None:
        self.progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task(label, total=total, status="")
        self.correct = 0

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def case(self, result: CaseResult) -> None:
        self.correct += result.valid
        self.progress.update(self.task, advance=1, status=f"{self.correct} correct")

    def step(self, *_: object) -> None:
        self.progress.update(self.task, advance=1)


def _evaluate(
    agent: Agent, console: Console, cases: list[BfclCase], mode: Mode, *, skill: str | None = None, k: int = 3
) -> EvalReport:
    with _Bar(console, f"{mode:9s}", len(cases)) as bar:
        report = evaluate(agent, CATEGORY, "test", mode=mode, skill=skill, k=k, cases=cases, on_case=bar.case)
    example = report.cases[0]
    console.print(
        f"  accuracy {report.accuracy:.1%} ({report.correct}/{report.n}), tool calls {report.tool_call_rate:.0%}, "
        f"{report.prompt_tokens_mean:.0f} prompt tokens, {report.seconds_per_case:.1f} s per case"
    )
    console.print(f"  e.g. {example.id}: {example.text[:160]!r} -> {'valid' if example.valid else example.reason}")
    return report


def _consolidated(console: Console, report: ConsolidationReport) -> None:
    verdict = "promoted" if report.promoted else "rejected"
    losses = f"loss {report.losses[0]:.3f} -> {report.losses[-1]:.3f}, " if report.losses else ""
    console.print(
        f"  revision {report.revision} {verdict}: {report.reason}\n"
        f"  {report.n_train} episodes + {report.n_replay} replay answers, {len(report.losses)} steps in "
        f"{report.train_seconds:.0f} s ({report.train_tokens_per_second:.0f} tokens/s), {losses}"
        f"held-out first-turn match {report.current.heldout_match} (before) -> {report.candidate.heldout_match}"
    )


def plot_demo(summary: dict[str, Any], path: Path) -> None:
    """Accuracy and prompt tokens per mode, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summary["modes"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    colours = ["#999", "#69c", "#c63"][: len(modes)]
    left.bar(modes, [100 * summary["modes"][m]["accuracy"] for m in modes], color=colours)
    left.set_ylabel("accuracy (%)")
    left.set_ylim(0, 100)
    left.set_title(f"BFCL {CATEGORY}, {summary['n_test']} test cases")
    right.bar(modes, [summary["modes"][m]["prompt_tokens_mean"] for m in modes], color="#888")
    right.set_ylabel("prompt tokens per case")
    right.set_title(f"{summary['n_train']} demonstrations")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _load(
    settings: Settings, console: Console, base: Any, n_test: int, n_train: int, practice_cases: int
) -> tuple[Any, list[BfclCase], list[BfclCase], list[BfclCase]]:
    """The base (loaded unless given), the test slice, the demonstrations and the practice pool (train split)."""
    console.rule("[bold]habitloop demo: a tool-calling habit, from context into weights (BFCL)")
    console.print("Loading the shared base model (the first run converts the packaged GGUF, ~30 s)...")
    base = base if base is not None else load_base(settings=settings)
    console.print(f"  {base.name}: {base.parameters:,} parameters, {base.dtype}, loaded in {base.load_seconds:.2f} s")
    console.print("Loading BFCL (the bfcl-eval wheel's data; downloaded once if `make setup` did not)...")
    test = load_cases(settings.home, CATEGORY, "test", limit=n_test)
    train_all = load_cases(settings.home, CATEGORY, "train")
    return base, test, train_all[:n_train], train_all[n_train : n_train + practice_cases]


def _record(agent: Agent, console: Console, train: list[BfclCase]) -> None:
    """Step 2: the demonstrations go into the buffer, replacing any a previous run left waiting."""
    console.print(f"\n[bold]2. {len(train)} demonstrations[/bold] from the train split go into the episode buffer.")
    # A rerun of the demo starts from the same demonstrations: drop the ones a previous run left waiting.
    agent.buffer.discard([t.id for t in agent.buffer.list(consolidated=False, instance=agent.instance)])
    with _Bar(console, "recording", len(train)) as bar:
        record_demonstrations(agent, train, on_case=bar.step)
    console.print(f"  buffer: {agent.buffer.stats().unconsolidated_successes} successes waiting")


def _consolidate(agent: Agent, console: Console) -> list[ConsolidationReport]:
    """Consolidate the waiting episodes into the skill, and say what the gate decided."""
    reports = agent.consolidate(SKILL)
    for done in reports:
        _consolidated(console, done)
    return reports


def _practise(agent: Agent, console: Console, pool: list[BfclCase]) -> list[ConsolidationReport]:
    """Step 5: one practice round with the skill active; its successes consolidated if there are enough."""
    console.print(f"\n[bold]5. Practice[/bold] on {len(pool)} more train cases with the skill active:")
    with _Bar(console, "practice", len(pool)) as bar:
        summary = practice(agent, pool, attempts=2, skill=SKILL, on_case=bar.step)
    console.print(f"  {summary.solved}/{summary.cases} solved in {summary.attempts} samples")
    if summary.solved >= agent.consolidation.min_episodes:
        return _consolidate(agent, console)
    return []


def _table(reports: dict[str, EvalReport], n_test: int) -> Table:
    table = Table(title=f"BFCL {CATEGORY}: the same {n_test} test cases, end to end through the agent loop")
    for column in ("mode", "accuracy", "tool calls", "prompt tokens", "s / case"):
        table.add_column(column)
    for mode, report in reports.items():
        table.add_row(
            mode,
            f"{report.accuracy:.1%} ({report.correct}/{report.n})",
            f"{report.tool_call_rate:.0%}",
            f"{report.prompt_tokens_mean:.0f}",
            f"{report.seconds_per_case:.1f}",
        )
    return table


def _write(settings: Settings, console: Console, summary: dict[str, Any], reports: dict[str, EvalReport]) -> None:
    """`reports/bfcl-demo.json`, one JSON line per case and mode, and the plot."""
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / "bfcl-demo.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    for mode, report in reports.items():
        report.write_cases(settings.reports_dir / f"bfcl-demo-{mode}.jsonl")
    plot = settings.reports_dir / "bfcl-demo.png"
    plot_demo(summary, plot)
    console.print(f"report: {path}\nplot:   {plot}\nper-case results: {settings.reports_dir}/bfcl-demo-<mode>.jsonl")


def run_demo(
    settings: Settings | None = None,
    *,
    console: Console | None = None,
    n_test: int = 16,
    n_train: int = 32,
    practice_cases: int = 0,
    k: int = 3,
    base: Any = None,
    memory_act: bool = True,
) -> dict[str, Any]:
    """The whole loop on BFCL simple_python, then (`memory_act`) the second act on BFCL memory
    (`agent.evals.memory.demo`); returns the summary also written to `reports/bfcl-demo.json`.
    `base`: an already loaded base (default: load the settings' default)."""
    settings = settings or Settings()
    console = console or Console()
    started = time.perf_counter()
    base, test, train, practice_pool = _load(settings, console, base, n_test, n_train, practice_cases)
    agent = bfcl_agent(settings, base)
    reports: dict[str, EvalReport] = {}

    console.print(f"\n[bold]1. The base alone[/bold] on {len(test)} {CATEGORY} test cases (no skill, no examples):")
    reports["base"] = _evaluate(agent, console, test, "base")
    _record(agent, console, train)
    console.print(f"\n[bold]3. Retrieval[/bold]: the same test cases with {k} similar demonstrations in the prompt:")
    reports["retrieval"] = _evaluate(agent, console, test, "retrieval", k=k)
    console.print(f"\n[bold]4. Consolidation[/bold] of the buffered demonstrations into {SKILL!r}...")
    consolidations = _consolidate(agent, console)
    if practice_pool and agent.store.exists(SKILL):
        consolidations += _practise(agent, console, practice_pool)
    if agent.store.exists(SKILL):
        revision = agent.store.get(SKILL).current
        console.print(f"\n[bold]6. The skill[/bold] {SKILL}@{revision}, no examples in the prompt:")
        reports["skill"] = _evaluate(agent, console, test, "skill", skill=SKILL)
    else:
        console.print(f"\n[yellow]The skill {SKILL!r} was not created (the gate rejected it); no skill mode.[/yellow]")

    console.print()
    console.print(_table(reports, len(test)))
    summary: dict[str, Any] = {
        "category": CATEGORY,
        "n_test": len(test),
        "n_train": len(train),
        "practice_cases": len(practice_pool),
        "k": k,
        "base": base.info().model_dump(),
        "modes": {mode: report.summary() for mode, report in reports.items()},
        "consolidations": [r.model_dump(mode="json") for r in consolidations],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    _write(settings, console, summary, reports)
    if memory_act:
        from agent.evals.memory.demo import run_memory_act

        console.print()
        summary["memory"] = run_memory_act(settings, console, base)
        summary["wall_seconds"] = round(time.perf_counter() - started, 1)
        (settings.reports_dir / "bfcl-demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"[dim]{summary['wall_seconds']:.0f} s in all[/dim]")
    return summary
