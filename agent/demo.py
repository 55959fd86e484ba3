"""`habitloop demo`: the agent, a skill learned into weights, measured before and after. Nothing is simulated.

1. load the shared base (converting the packaged GGUF on first use);
2. run the agent (LangGraph loop, calculator tool) on 8 held-out arithmetic tasks with the base alone;
3. train a LoRA skill `calculator-habit` on 24 demonstrations of the whole loop (call the calculator in the exact
   format, read its result, answer), mixed with the base's own answers to unrelated prompts (self-distillation
   replay, so the habit does not leak into everything);
4. measure the candidate turn by turn on the held-out tasks (first reply: the exact call? after the result: the
   right answer?) and off-task (still no tool call?), then commit it with that evaluation (a rerun adds a revision,
   promoted only if it is not worse than the current one);
5. run the agent again with the skill from the store, end to end, and list the store.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.api import Agent
from agent.base import load_base
from agent.config import Settings
from agent.generation import generate
from agent.models import LocalChatModel
from agent.prompt import system_prompt, tool_result_message
from skills import ChatExample, ChatMessage, Evaluation, Residency, SkillStore, TrainConfig, train_lora
from tools import ToolRegistry, calculator

SKILL = "calculator-habit"
DESCRIPTION = (
    "Answer arithmetic questions with a calculator tool call in the exact format "
    '<tool_call>{"name": "calculator", "arguments": {"expression": ...}}</tool_call>.'
)
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
_OFF_TASK_TRAIN = (
    "What is the capital of France?",
    "Name a primary color.",
    "Who wrote Romeo and Juliet?",
    "Give me one tip for sleeping better.",
    "What is a synonym for happy?",
    "Say hello in Spanish.",
    "What do bees make?",
    "Describe the sky in three words.",
)
OFF_TASK_EVAL = (
    "What is the capital of Italy?",
    "Name an animal that lives in the sea.",
    "Who painted the Mona Lisa?",
    "Give me a word that rhymes with cat.",
    "What colour is grass?",
    "Tell me a fun fact about the moon.",
)
_CALL = re.compile(r"^<tool_call>(.*)</tool_call>$", re.S)


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


def is_exact_call(reply: str, expression: str | None = None) -> bool:
    """True when the reply is exactly one calculator call in our format (and, if given, for that expression)."""
    match = _CALL.match(reply.strip())
    if not match:
        return False
    try:
        call = json.loads(match.group(1))
    except ValueError:
        return False
    if not isinstance(call, dict) or call.get("name") != "calculator" or not isinstance(call.get("arguments"), dict):
        return False
    got = str(call["arguments"].get("expression", "")).replace(" ", "")
    return expression is None or got == expression


def _rate(replies: list[str], expressions: list[str] | None = None) -> float:
    hits = [is_exact_call(r, expressions[i] if expressions else None) for i, r in enumerate(replies)]
    return sum(hits) / len(hits)


def _value(expression: str) -> str:
    return calculator(expression)


def _chat(system: str, question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def demonstration(system: str, question: str, expression: str) -> ChatExample:
    """The whole loop as one conversation: the call, the tool's result, the answer (both assistant turns learn)."""
    value = _value(expression)
    return ChatExample(
        messages=(
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=question),
            ChatMessage(role="assistant", content=tool_call_text(expression)),
            ChatMessage(**tool_result_message("calculator", value, ok=True)),
            ChatMessage(role="assistant", content=f"{expression} = {value}"),
        )
    )


def measure(model: Any, tokenizer: Any, system: str, held_out: list[tuple[str, str]], base_off_task: list[str] | None):
    """Turn by turn, exactly what the agent loop would generate (greedy), on held-out tasks and off-task prompts.

    - call rates: the first reply is one calculator call in our format (with the right expression: exact);
    - answer rate: given the correct tool result, the next reply contains the right number;
    - off-task: the rate of tool calls on unrelated prompts, and exact agreement with the base's own answers.
    """
    first = generate(model, tokenizer, [_chat(system, q) for q, _ in held_out], max_new_tokens=40)
    second_chats = [
        [
            *_chat(system, q),
            {"role": "assistant", "content": tool_call_text(e)},
            tool_result_message("calculator", _value(e), ok=True),
        ]
        for q, e in held_out
    ]
    second = generate(model, tokenizer, second_chats, max_new_tokens=24)
    off = generate(model, tokenizer, [_chat(system, q) for q in OFF_TASK_EVAL], max_new_tokens=40)
    metrics = {
        "heldout_call_format_rate": _rate(first),
        "heldout_exact_call_rate": _rate(first, [e for _, e in held_out]),
        "heldout_answer_after_result_rate": sum(_value(e) in r for r, (_, e) in zip(second, held_out, strict=True))
        / len(held_out),
        "offtask_call_rate": _rate(off),
    }
    if base_off_task is not None:
        metrics["offtask_agreement_with_base"] = sum(a == b for a, b in zip(off, base_off_task, strict=True)) / len(off)
    return {
        "metrics": metrics,
        "examples": {"heldout": first[:3], "answer": second[:3], "offtask": off[:3]},
        "off": off,
    }


def _answer_contains(value: str) -> Callable[..., bool]:
    def check(task: str, answer: str | None, trajectory: Any) -> bool:
        return value in (answer or "")

    return check


def agent_accuracy(agent: Agent, held_out: list[tuple[str, str]], skills: list[str]) -> dict[str, Any]:
    """End to end through the agent loop: the share of tasks whose final answer contains the right number."""
    results = [agent.run(q, skills=skills, checker=_answer_contains(_value(e))) for q, e in held_out]
    return {
        "accuracy": sum(r.outcome.status == "success" for r in results) / len(results),
        "tool_calls": sum(any(s.kind == "tool_call" for s in r.steps) for r in results) / len(results),
        "mean_model_calls": sum(sum(s.kind == "model" for s in r.steps) for r in results) / len(results),
        "example": [(s.kind, s.text) for s in results[0].steps],
    }


def run_demo(settings: Settings | None = None, *, steps: int = 24, console: Console | None = None) -> dict:
    settings = settings or Settings()
    console = console or Console()
    console.rule("[bold]habitloop demo")
    console.print("Loading the shared base model (the first run converts the packaged GGUF, ~30 s)...")
    base = load_base(settings=settings)
    console.print(f"  {base.name}: {base.parameters:,} parameters, {base.dtype}, loaded in {base.load_seconds:.2f} s")
    console.print(f"  fingerprint {base.fingerprint}")

    items = arithmetic_items(40, seed=7)
    train_items, held_out = items[:24], items[24:32]
    store = SkillStore(settings.skills_dir, base_fingerprint=base.fingerprint)
    residency = Residency(base.model, store, max_hot=settings.max_hot, max_warm=settings.max_warm)
    tools = ToolRegistry([calculator])
    system = system_prompt(tools.schemas()) or ""
    agent = Agent(settings=settings, base=base, model=LocalChatModel(base, residency), store=store, tools=[calculator])

    console.print("\n[bold]1. The agent with the base alone[/bold] on 8 held-out arithmetic tasks (calculator tool):")
    base_agent = agent_accuracy(agent, held_out, skills=[])
    console.print(f"  accuracy {base_agent['accuracy']:.0%}, tasks with a tool call {base_agent['tool_calls']:.0%}")
    console.print(f"  e.g. {held_out[0][0]!r}: {base_agent['example']}")
    with residency.base_only() as model:
        before = measure(model, base.tokenizer, system, held_out, None)
        replay = generate(model, base.tokenizer, [_chat(system, q) for q in _OFF_TASK_TRAIN], max_new_tokens=48)
    base_off_task = before["off"]
    console.print(f"  turn by turn: {before['metrics']}")

    examples = [demonstration(system, q, e) for q, e in train_items]
    examples += [
        ChatExample(
            messages=(
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=q),
                ChatMessage(role="assistant", content=a),
            ),
            source_id=f"replay-{i}",
        )
        for i, (q, a) in enumerate(zip(_OFF_TASK_TRAIN, replay, strict=True))
    ]
    console.print(
        f"\n[bold]2. Training {SKILL!r}[/bold]: {len(train_items)} demonstrations of the loop + "
        f"{len(replay)} replay answers..."
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train_lora(
            residency.model,
            base.tokenizer,
            examples,
            Path(tmp) / "adapter",
            config=TrainConfig(steps=steps, batch_size=4, learning_rate=1e-3, seed=0),
            episode_ids=[f"demo-{i}" for i in range(len(examples))],
        )
        console.print(
            f"  {result.steps} steps in {result.seconds:.1f} s ({result.tokens_per_second:.0f} tokens/s), "
            f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}"
        )
        # Measure the candidate before committing it, so that its revision record carries its evaluation.
        with residency.trial(result.adapter_dir) as model:
            after = measure(model, base.tokenizer, system, held_out, base_off_task)
        console.print(f"  candidate, turn by turn: {after['metrics']}")
        console.print(f"  e.g. {held_out[0][0]!r} -> {after['examples']['heldout'][0]!r}")
        console.print(f"  off-task e.g. {OFF_TASK_EVAL[0]!r} -> {after['examples']['offtask'][0]!r}")
        evaluation = Evaluation(
            metrics=after["metrics"],
            details={"base": before["metrics"], "heldout_prompts": [q for q, _ in held_out]},
        )
        score = after["metrics"]["heldout_exact_call_rate"] + after["metrics"]["heldout_answer_after_result_rate"]
        if not store.exists(SKILL):
            store.create(
                SKILL,
                result.adapter_dir,
                kind="tool_habit",
                description=DESCRIPTION,
                tags=["calculator", "demo"],
                provenance=result.provenance,
                evaluation=evaluation,
            )
            record = store.revision(SKILL)
            console.print(f"  committed {SKILL!r} revision {record.number}")
        else:
            # A rerun: gate the new revision against the current one on the same held-out tasks.
            current = store.revision(SKILL).evaluation.metrics
            current_score = current.get("heldout_exact_call_rate", 0.0) + current.get(
                "heldout_answer_after_result_rate", 0.0
            )
            better = score >= current_score
            record = store.add_revision(
                SKILL,
                result.adapter_dir,
                provenance=result.provenance,
                evaluation=evaluation,
                promote=better,
                note=f"demo gate: {score:.2f} vs current {current_score:.2f}",
            )
            verdict = "promoted" if better else "kept as rejected"
            console.print(f"  revision {record.number} {verdict} ({score:.2f} vs current {current_score:.2f})")

    console.print(f"\n[bold]3. The agent with {SKILL!r}[/bold] (revision {store.get(SKILL).current}, from the store):")
    skill_agent = agent_accuracy(agent, held_out, skills=[SKILL])
    console.print(f"  accuracy {skill_agent['accuracy']:.0%}, tasks with a tool call {skill_agent['tool_calls']:.0%}")
    console.print(f"  e.g. {held_out[0][0]!r}: {skill_agent['example']}")

    report = {
        "skill": SKILL,
        "revision": record.number,
        "base": base.info().model_dump(),
        "agent_base_only": {k: v for k, v in base_agent.items() if k != "example"},
        "agent_with_skill": {k: v for k, v in skill_agent.items() if k != "example"},
        "turns_before": before["metrics"],
        "turns_after": after["metrics"],
        "training": {"steps": result.steps, "seconds": result.seconds, "losses": result.losses},
    }
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    (settings.reports_dir / "demo.json").write_text(json.dumps(report, indent=2) + "\n")

    table = Table(title=f"skills in {store.root}")
    for column in ("name", "kind", "current", "revisions", "description"):
        table.add_column(column)
    for skill in store.list():
        table.add_row(skill.name, skill.kind, str(skill.current), str(len(skill.revision_numbers())), skill.description)
    console.print()
    console.print(table)
    console.print(f"report: {settings.reports_dir / 'demo.json'}")
    console.print(
        "[dim]Not built yet: routing and composition, the episode buffer and consolidation (see the open issues).[/dim]"
    )
    return report
