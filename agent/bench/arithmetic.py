"""Arithmetic tasks for the calculator habit: drawn deterministically, with the whole loop as a demonstration.

The data of the consolidation benchmark (`agent.bench.runner`) and of the real-base calculator tests; it was the data
of the first demo, before the demo moved to BFCL.
"""

from __future__ import annotations

import json
import random

from agent.prompt import tool_result_message
from memory.trajectory import Trajectory
from tools import calculator

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
