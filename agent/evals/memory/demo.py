"""The demo's second act: what one user tells the agent moves from the buffer into their own adapter (BFCL memory).

One dev user (notetaker: 5 conversations, 24 turns, 25 questions) tells their agent about their week; the
questions are asked cold in three modes: the base alone, retrieval (the most similar of their turns in the prompt),
and their memory adapter (nothing in the prompt but the question), after one facts consolidation
(`memory.recipe.facts_recipe`, at most `DEMO_STEPS` steps). A rerun reuses what a previous run told and learned.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.api import Agent
from agent.config import Settings
from agent.evals.memory.data import load_conversations, load_questions
from agent.evals.memory.harness import MemoryEvalReport, evaluate_memory
from agent.evals.memory.play import play_conversations
from agent.evals.memory.report import write_memory_report
from memory.recipe import facts_recipe

SCENARIO = "notetaker"  # a dev user: the final users (healthcare, student) are never used to build the demo
DEMO_STEPS = 64  # the default recipe's 8 epochs of notetaker's ~90 examples would be ~90 steps; the demo has a budget


def run_memory_act(settings: Settings, console: Console, base: Any, *, scenario: str = SCENARIO) -> dict[str, Any]:
    """Play the user's conversations, evaluate base and retrieval, consolidate their facts, evaluate weights; print
    the table and return the summary (also written as `reports/memory-demo.json` and `.png`)."""
    started = time.perf_counter()
    recipe = facts_recipe(max_steps=DEMO_STEPS)
    agent = Agent(settings=settings, base=base, instance=scenario, tools=[], max_steps=1, consolidation=recipe)
    conversations = load_conversations(settings.home, scenario)
    questions = load_questions(settings.home, scenario)
    console.rule(f"[bold]Act 2: what {scenario!r} tells the agent, from the buffer into their adapter (BFCL memory)")
    turns = sum(len(c.turns) for c in conversations)
    console.print(f"\n[bold]1. {scenario} tells the agent[/bold] {turns} turns in {len(conversations)} conversations:")
    played = play_conversations(agent, conversations)
    console.print(f"  {played.turns_played} turns told ({played.turns_skipped} already in the buffer)")
    reports: dict[str, MemoryEvalReport] = {}
    console.print(f"\n[bold]2. {len(questions)} questions asked cold[/bold] (a fresh prompt, no tools):")
    for mode in ("base", "retrieval"):
        reports[mode] = _evaluate(agent, console, scenario, mode, questions)
    console.print(f"\n[bold]3. Consolidation[/bold] of what {scenario} said into {scenario}/memory (self-study):")
    consolidations = agent.consolidate(facts=True)
    for report in consolidations:
        console.print(
            f"  revision {report.revision} {'promoted' if report.promoted else 'rejected'}: {report.reason}\n"
            f"  {report.n_train} turns -> {len(report.losses)} steps in {report.train_seconds:.0f} s"
        )
    if agent.skills.exists("memory"):
        console.print("\n[bold]4. The memory adapter[/bold], nothing in the prompt but the question:")
        reports["weights"] = _evaluate(agent, console, scenario, "weights", questions)
    console.print(_table(reports, scenario))
    files = write_memory_report(list(reports.values()), settings.reports_dir, stem="memory-demo")
    console.print(f"report: {files.json_path}")
    return {
        "scenario": scenario,
        "modes": {mode: report.summary() for mode, report in reports.items()},
        "consolidations": [r.model_dump(mode="json") for r in consolidations],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _evaluate(agent: Agent, console: Console, scenario: str, mode: str, questions: list[Any]) -> MemoryEvalReport:
    report = evaluate_memory(agent, scenario, mode, questions=questions)
    console.print(
        f"  {mode:9s} accuracy {report.accuracy:.0%} (control {report.control_accuracy:.0%}), "
        f"{report.prompt_tokens_mean:.0f} prompt tokens, {report.seconds_per_question:.1f} s per question"
    )
    return report


def _table(reports: dict[str, MemoryEvalReport], scenario: str) -> Table:
    table = Table(title=f"BFCL memory, user {scenario!r}: the same questions, asked cold")
    for column in ("mode", "accuracy", "control", "prompt tokens", "answer tokens", "s / question"):
        table.add_column(column)
    for mode, report in reports.items():
        table.add_row(
            mode,
            f"{report.accuracy:.1%} ({round(report.accuracy * report.n)}/{report.n})",
            f"{report.control_accuracy:.1%}",
            f"{report.prompt_tokens_mean:.0f}",
            f"{report.answer_tokens_mean:.0f}",
            f"{report.seconds_per_question:.1f}",
        )
    return table
