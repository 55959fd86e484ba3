"""`habitloop demo`: experience moves from context into weights, measured on the real base. Nothing is simulated.

1. load the shared base (converting the packaged GGUF on first use);
2. run the agent (LangGraph loop, calculator tool) on 8 held-out arithmetic tasks with the base alone;
3. give it 24 demonstrations of the whole loop (call the calculator in the exact format, read the result, answer):
   they wait in the episode buffer (chromadb);
4. run the held-out tasks again in retrieval mode: similar demonstrations shown in the prompt as worked examples;
5. consolidate: the buffered successes become a LoRA skill `calculator-habit` (with replay of the base's own
   answers to unrelated prompts, gated against the base on held-out episodes and off-task behaviour), and leave the
   retrieval pool;
6. run the held-out tasks with the skill and no examples: the habit now lives in the weights, the prompt is short.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.api import Agent
from agent.base import load_base
from agent.config import Settings
from agent.models import LocalChatModel
from agent.prompt import tool_result_message
from memory.consolidate import ConsolidationConfig
from memory.trajectory import Trajectory
from skills import Residency, SkillStore
from tools import calculator

SKILL = "calculator-habit"
_TEMPLATES = (
    "What is {a} * {b}?",
    "Compute {a} + {b}.",
    "How much is {a} - {b}?",
    "Calculate {a} / {b}.",
    "What's {a} times {b}?",
    "Please work out {a} + {b} * {c}.",
    "I need {a} * {b} - {c}, quickly.",
    "what is {a}+{b}",
)


def arithmetic_items(n: int, seed: int) -> list[tuple[str, str]]:
    """(question, expression) pairs, drawn deterministically."""
    rng = random.Random(seed)
    items = []
    for index in range(n):
        template = _TEMPLATES[index % len(_TEMPLATES)]
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
        question = template.format(a=a, b=b, c=c)
        op = {"*": "*", "+": "+", "-": "-", "/": "/", "times": "*"}
        if "{c}" in template:
            expression = f"{a}+{b}*{c}" if "+ {b} *" in template else f"{a}*{b}-{c}"
        else:
            symbol = next(op[s] for s in ("times", "*", "+", "-", "/") if s in template)
            expression = f"{a}{symbol}{b}"
        items.append((question, expression))
    return items


def tool_call_text(expression: str) -> str:
    arguments = {"name": "calculator", "arguments": {"expression": expression}}
    return f"<tool_call>{json.dumps(arguments)}</tool_call>"


def _value(expression: str) -> str:
    return calculator(expression)


def demonstration(system: str | None, question: str, expression: str) -> Trajectory:
    """The whole loop for one task, as a user would demonstrate it: the call, the tool's result, the answer."""
    return Trajectory.demonstration(
        question,
        [
            {"role": "assistant", "content": tool_call_text(expression)},
            tool_result_message("calculator", _value(expression), ok=True),
            {"role": "assistant", "content": f"{expression} = {_value(expression)}"},
        ],
        system_prompt=system,
    )


def _answer_contains(value: str) -> Callable[..., bool]:
    def check(task: str, answer: str | None, trajectory: Any) -> bool:
        return value in (answer or "")

    return check


def agent_accuracy(agent: Agent, held_out: list[tuple[str, str]], *, skills: list[str], examples: int) -> dict:
    """End to end through the agent loop: the share of tasks whose final answer contains the right number."""
    results = [agent.run(q, skills=skills, checker=_answer_contains(_value(e)), examples=examples) for q, e in held_out]
    # These evaluation runs are recorded like any run; take them out again so they do not train the skill.
    agent.buffer.discard([r.run_id for r in results])
    first_prompts = [r.trajectory.prompt_tokens / max(1, sum(s.kind == "model" for s in r.steps)) for r in results]
    return {
        "accuracy": sum(r.outcome.status == "success" for r in results) / len(results),
        "tool_calls": sum(any(s.kind == "tool_call" for s in r.steps) for r in results) / len(results),
        "prompt_tokens_per_call": round(sum(first_prompts) / len(first_prompts)),
        "example": [(s.kind, s.text) for s in results[0].steps],
    }


def run_demo(settings: Settings | None = None, *, console: Console | None = None) -> dict:
    settings = settings or Settings()
    console = console or Console()
    console.rule("[bold]habitloop demo")
    console.print("Loading the shared base model (the first run converts the packaged GGUF, ~30 s)...")
    base = load_base(settings=settings)
    console.print(f"  {base.name}: {base.parameters:,} parameters, {base.dtype}, loaded in {base.load_seconds:.2f} s")

    items = arithmetic_items(40, seed=7)
    train_items, held_out = items[:24], items[24:32]
    store = SkillStore(settings.skills_dir, base_fingerprint=base.fingerprint)
    residency = Residency(base.model, store, max_hot=settings.max_hot, max_warm=settings.max_warm)
    agent = Agent(
        settings=settings,
        base=base,
        model=LocalChatModel(base, residency),
        store=store,
        tools=[calculator],
        max_steps=3,
        max_new_tokens=48,
        consolidation=ConsolidationConfig(kind="tool_habit", epochs=3.0, min_episodes=8),
    )
    rows: dict[str, dict] = {}

    def show(mode: str, result: dict) -> None:
        rows[mode] = result
        console.print(
            f"  accuracy {result['accuracy']:.0%}, tasks with a tool call {result['tool_calls']:.0%}, "
            f"{result['prompt_tokens_per_call']} prompt tokens per model call"
        )
        console.print(f"  e.g. {held_out[0][0]!r}: {result['example']}")

    console.print("\n[bold]1. The base alone[/bold] on 8 held-out arithmetic tasks (calculator tool, no examples):")
    show("base", agent_accuracy(agent, held_out, skills=[], examples=0))

    console.print(f"\n[bold]2. {len(train_items)} demonstrations[/bold] of the loop go into the episode buffer.")
    # A rerun of the demo starts from the same demonstrations: drop the ones a previous run left waiting.
    agent.buffer.discard([t.id for t in agent.buffer.list(consolidated=False)])
    for question, expression in train_items:
        agent.learn_from(demonstration(agent.system_prompt(), question, expression))
    console.print(f"  buffer: {agent.buffer.stats().unconsolidated_successes} successes waiting")

    console.print("\n[bold]3. Retrieval[/bold]: the same tasks with 2 similar demonstrations in the prompt:")
    show("retrieval", agent_accuracy(agent, held_out, skills=[], examples=2))

    console.print(f"\n[bold]4. Consolidation[/bold] of the buffered successes into {SKILL!r}...")
    (report,) = agent.consolidate(SKILL)
    verdict = "promoted" if report.promoted else "rejected"
    console.print(
        f"  revision {report.revision} {verdict}: {report.reason}\n"
        f"  {report.n_train} episodes + {report.n_replay} replay answers, {len(report.losses)} steps in "
        f"{report.train_seconds:.0f} s ({report.train_tokens_per_second:.0f} tokens/s), loss "
        f"{report.losses[0]:.3f} -> {report.losses[-1]:.3f}; held-out first-turn match "
        f"{report.current.heldout_match} (base) -> {report.candidate.heldout_match} (skill)"
    )
    console.print(f"  buffer: {agent.buffer.stats().unconsolidated_successes} successes still waiting")
    console.print(f"  report: {report.report_path}\n  plot:   {report.plot_path}")

    if store.exists(SKILL):
        console.print(f"\n[bold]5. The skill[/bold] (revision {store.get(SKILL).current}), no examples in the prompt:")
        show("skill", agent_accuracy(agent, held_out, skills=[SKILL], examples=0))

    table = Table(title="the same 8 held-out tasks, end to end")
    for column in ("mode", "accuracy", "tool calls", "prompt tokens per model call"):
        table.add_column(column)
    for mode, row in rows.items():
        table.add_row(mode, f"{row['accuracy']:.0%}", f"{row['tool_calls']:.0%}", str(row["prompt_tokens_per_call"]))
    console.print()
    console.print(table)
    summary = {
        "base": base.info().model_dump(),
        "modes": {mode: {k: v for k, v in row.items() if k != "example"} for mode, row in rows.items()},
        "consolidation": report.model_dump(mode="json"),
    }
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    (settings.reports_dir / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"report: {settings.reports_dir / 'demo.json'}")
    console.print("[dim]Not built yet: routing and composition of several skills, BFCL, packs, serving.[/dim]")
    return summary
