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
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
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
from memory.consolidate import ConsolidationConfig, ConsolidationReport

SKILL = "tool-habits"
CATEGORY = "simple_python"
# Enough for the ground-truth call of any simple_python case; prose from the base is cut there.
MAX_NEW_TOKENS = 96


def bfcl_consolidation(**overrides: Any) -> ConsolidationConfig:
    """The recipe for BFCL tool habits: all-linear r=8 LoRA (the default spec), 2 epochs, batch 4, lr 1e-3; held-out
    replies long enough to hold a whole call."""
    recipe = {
        "kind": "tool_habit",
        "epochs": 2.0,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "min_episodes": 4,
        "max_steps": 400,
        "max_new_tokens": MAX_NEW_TOKENS,
        "holdout_fraction": 0.1,
        "gradient_checkpointing": False,  # 1.3x the training tokens/s on the base (measured); memory is ample here
    }
    return ConsolidationConfig(**(recipe | overrides))


def bfcl_agent(settings: Settings, base: Any = None, **recipe: Any) -> Agent:
    """An agent for BFCL cases on the shared base: no tools of its own (each case brings its functions), one step
    (the first call is what is judged), and the BFCL consolidation recipe with `recipe` overrides."""
    return Agent(  # the agent builds the store, the residency and the local model on `base` itself
        settings=settings,
        base=base if base is not None else load_base(settings=settings),
        tools=[],
        max_steps=1,
        max_new_tokens=MAX_NEW_TOKENS,
        consolidation=bfcl_consolidation(**recipe),
    )


def experiment_agent(settings: Settings, agent: Agent | None = None, recipe: dict[str, Any] | None = None) -> Agent:
    """The agent an experiment runs on (`agent`, e.g. one on the tiny base in tests, or a `bfcl_agent`), with the
    BFCL recipe and `recipe` overrides as its consolidation."""
    agent = agent or bfcl_agent(settings)
    agent.consolidation = bfcl_consolidation(**(recipe or {}))
    return agent


def fresh_demonstrations(agent: Agent, cases: Sequence[BfclCase], *, state_optional: bool = False) -> list[Any]:
    """Drop the buffer's waiting episodes, then record `cases` as demonstrations: each experiment step trains on
    exactly the demonstrations it names."""
    agent.buffer.discard([t.id for t in agent.buffer.list(consolidated=False)])
    return record_demonstrations(agent, cases, state_optional=state_optional)


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


def run_demo(
    settings: Settings | None = None,
    *,
    console: Console | None = None,
    n_test: int = 16,
    n_train: int = 32,
    practice_cases: int = 0,
    k: int = 3,
    base: Any = None,
) -> dict[str, Any]:
    """The whole loop on BFCL simple_python; returns the summary also written to `reports/bfcl-demo.json`.
    `base`: an already loaded base (default: load the settings' default)."""
    settings = settings or Settings()
    console = console or Console()
    started = time.perf_counter()
    console.rule("[bold]habitloop demo: a tool-calling habit, from context into weights (BFCL)")
    console.print("Loading the shared base model (the first run converts the packaged GGUF, ~30 s)...")
    base = base if base is not None else load_base(settings=settings)
    console.print(f"  {base.name}: {base.parameters:,} parameters, {base.dtype}, loaded in {base.load_seconds:.2f} s")
    console.print("Loading BFCL (the bfcl-eval wheel's data; downloaded once if `make setup` did not)...")
    test = load_cases(settings.home, CATEGORY, "test", limit=n_test)
    train_all = load_cases(settings.home, CATEGORY, "train")
    train, practice_pool = train_all[:n_train], train_all[n_train : n_train + practice_cases]

    agent = bfcl_agent(settings, base)
    reports: dict[str, EvalReport] = {}
    consolidations: list[ConsolidationReport] = []

    console.print(f"\n[bold]1. The base alone[/bold] on {len(test)} {CATEGORY} test cases (no skill, no examples):")
    reports["base"] = _evaluate(agent, console, test, "base")

    console.print(f"\n[bold]2. {len(train)} demonstrations[/bold] from the train split go into the episode buffer.")
    # A rerun of the demo starts from the same demonstrations: drop the ones a previous run left waiting.
    agent.buffer.discard([t.id for t in agent.buffer.list(consolidated=False)])
    with _Bar(console, "recording", len(train)) as bar:
        record_demonstrations(agent, train, on_case=bar.step)
    console.print(f"  buffer: {agent.buffer.stats().unconsolidated_successes} successes waiting")

    console.print(f"\n[bold]3. Retrieval[/bold]: the same test cases with {k} similar demonstrations in the prompt:")
    reports["retrieval"] = _evaluate(agent, console, test, "retrieval", k=k)

    console.print(f"\n[bold]4. Consolidation[/bold] of the buffered demonstrations into {SKILL!r}...")
    consolidations += agent.consolidate(SKILL)
    for done in consolidations:
        _consolidated(console, done)

    if practice_pool and agent.store.exists(SKILL):
        console.print(f"\n[bold]5. Practice[/bold] on {len(practice_pool)} more train cases with the skill active:")
        with _Bar(console, "practice", len(practice_pool)) as bar:
            summary = practice(agent, practice_pool, attempts=2, skill=SKILL, on_case=bar.step)
        console.print(f"  {summary.solved}/{summary.cases} solved in {summary.attempts} samples")
        if summary.solved >= agent.consolidation.min_episodes:
            second = agent.consolidate(SKILL)
            consolidations += second
            for done in second:
                _consolidated(console, done)

    if agent.store.exists(SKILL):
        revision = agent.store.get(SKILL).current
        console.print(f"\n[bold]6. The skill[/bold] {SKILL}@{revision}, no examples in the prompt:")
        reports["skill"] = _evaluate(agent, console, test, "skill", skill=SKILL)
    else:
        console.print(f"\n[yellow]The skill {SKILL!r} was not created (the gate rejected it); no skill mode.[/yellow]")

    table = Table(title=f"BFCL {CATEGORY}: the same {len(test)} test cases, end to end through the agent loop")
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
    console.print()
    console.print(table)
    summary_json: dict[str, Any] = {
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
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / "bfcl-demo.json"
    path.write_text(json.dumps(summary_json, indent=2) + "\n")
    for mode, report in reports.items():
        report.write_cases(settings.reports_dir / f"bfcl-demo-{mode}.jsonl")
    plot = settings.reports_dir / "bfcl-demo.png"
    plot_demo(summary_json, plot)
    console.print(f"report: {path}\nplot:   {plot}\nper-case results: {settings.reports_dir}/bfcl-demo-<mode>.jsonl")
    console.print(f"[dim]{summary_json['wall_seconds']:.0f} s in all[/dim]")
    return summary_json
