"""`habitloop demo`: what exists today, end to end, on the real base model. Nothing here is simulated.

1. load the shared base (converting the packaged GGUF on first use);
2. measure the base on held-out arithmetic prompts: does it answer with a calculator tool call in our exact format?
3. train a LoRA skill `calculator-habit` from 24 demonstrations, mixed with the base's own answers to unrelated
   prompts (self-distillation replay, so the habit does not leak into everything);
4. measure again with the skill active, and off-task (does it still answer normally?);
5. commit the skill to the store with its provenance and evaluation (a new revision if it exists, promoted only if
   it is not worse than the current one), and list the store.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.base import load_base
from agent.config import Settings
from agent.generation import generate
from skills import ChatExample, Evaluation, Residency, SkillStore, TrainConfig, train_lora

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


def measure(model: Any, tokenizer: Any, held_out: list[tuple[str, str]], base_off_task: list[str] | None) -> dict:
    """Format and exact-expression rates on held-out arithmetic; tool-call rate and agreement with the base off-task."""
    chats = [[{"role": "user", "content": q}] for q, _ in held_out]
    replies = generate(model, tokenizer, chats, max_new_tokens=40)
    off = generate(model, tokenizer, [[{"role": "user", "content": q}] for q in OFF_TASK_EVAL], max_new_tokens=40)
    metrics = {
        "heldout_call_format_rate": _rate(replies),
        "heldout_exact_call_rate": _rate(replies, [e for _, e in held_out]),
        "offtask_call_rate": _rate(off),
    }
    if base_off_task is not None:
        metrics["offtask_agreement_with_base"] = sum(a == b for a, b in zip(off, base_off_task, strict=True)) / len(off)
    return {"metrics": metrics, "examples": {"heldout": replies[:3], "offtask": off[:3]}}


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

    console.print("\nMeasuring the base alone on 8 held-out arithmetic prompts and 6 unrelated prompts...")
    with residency.base_only() as model:
        before = measure(model, base.tokenizer, held_out, None)
        base_off_task = generate(
            model, base.tokenizer, [[{"role": "user", "content": q}] for q in OFF_TASK_EVAL], max_new_tokens=40
        )
        replay_answers = generate(
            model, base.tokenizer, [[{"role": "user", "content": q}] for q in _OFF_TASK_TRAIN], max_new_tokens=48
        )
    console.print(f"  base: {before['metrics']}")
    console.print(f"  e.g. {held_out[0][0]!r} -> {before['examples']['heldout'][0]!r}")

    examples = [
        ChatExample.from_pair(q, tool_call_text(e), source_id=f"demo-{i}") for i, (q, e) in enumerate(train_items)
    ]
    examples += [
        ChatExample.from_pair(q, a, source_id=f"replay-{i}")
        for i, (q, a) in enumerate(zip(_OFF_TASK_TRAIN, replay_answers, strict=True))
    ]
    console.print(f"\nTraining {SKILL!r}: {len(train_items)} demonstrations + {len(replay_answers)} replay answers...")
    with tempfile.TemporaryDirectory() as tmp:
        result = train_lora(
            residency.model,
            base.tokenizer,
            examples,
            Path(tmp) / "adapter",
            config=TrainConfig(steps=steps, batch_size=4, learning_rate=1e-3, seed=0),
            episode_ids=[e.source_id or "" for e in examples],
        )
        console.print(
            f"  {result.steps} steps in {result.seconds:.1f} s ({result.tokens_per_second:.0f} tokens/s), "
            f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}"
        )
        # Measure the candidate before committing it, so that its revision record carries its evaluation.
        with residency.trial(result.adapter_dir) as model:
            after = measure(model, base.tokenizer, held_out, base_off_task)
        console.print(f"  with the skill: {after['metrics']}")
        console.print(f"  e.g. {held_out[0][0]!r} -> {after['examples']['heldout'][0]!r}")
        console.print(f"  off-task e.g. {OFF_TASK_EVAL[0]!r} -> {after['examples']['offtask'][0]!r}")
        evaluation = Evaluation(
            metrics=after["metrics"],
            details={"base": before["metrics"], "heldout_prompts": [q for q, _ in held_out]},
        )
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
            # A rerun: gate the new revision against the current one on the same held-out prompts.
            current = store.revision(SKILL)
            current_rate = current.evaluation.metrics.get("heldout_exact_call_rate", 0.0)
            better = after["metrics"]["heldout_exact_call_rate"] >= current_rate
            record = store.add_revision(
                SKILL,
                result.adapter_dir,
                provenance=result.provenance,
                evaluation=evaluation,
                promote=better,
                note=f"demo gate: {after['metrics']['heldout_exact_call_rate']:.2f} vs current {current_rate:.2f}",
            )
            verdict = "promoted" if better else "kept as rejected"
            console.print(f"  revision {record.number} {verdict} (current revision scored {current_rate:.2f})")

    # Use the skill the way the agent will: from the store, through residency.
    residency.activate(SKILL)
    question = held_out[1][0]
    reply = generate(residency.model, base.tokenizer, [[{"role": "user", "content": question}]], max_new_tokens=40)[0]
    console.print(f"\nFrom the store, revision {store.get(SKILL).current}: {question!r} -> {reply!r}")

    # The measured effect is in the revision record (evaluation) and in this report.
    report = {
        "skill": SKILL,
        "revision": record.number,
        "base": base.info().model_dump(),
        "before": before["metrics"],
        "after": after["metrics"],
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
        "[dim]Not yet built: the agent loop, routing, the episode buffer and consolidation (see the open issues).[/dim]"
    )
    return report
