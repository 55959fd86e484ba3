"""Unrelated prompts, which a skill must leave alone: the base answers them itself (adapters off).

Consolidation mixes the base's own answers to `OFF_TASK_TRAIN` into training (self-distillation replay, so a habit
does not leak into every answer) and asks `OFF_TASK_EVAL` of candidate and current model, counting tool calls.
The two pools are disjoint, so the check measures leakage, not memorised replay.

Why this many: a replay share of 20 % (the plain recipe that kept a 135M base from calling tools off-task) needs
about 50 prompts for 250 demonstrations, and a rate measured on 6 prompts cannot tell 0 from 1 stray call in 10;
on 24 prompts one stray call is 0.04, inside the gate's default margin, and two are not.
Each list starts with the prompts of the first release, so a small replay count keeps its old data.

The check itself (`call_rate`, `agreement`) takes the "is this a tool call" test as a parameter: memory may not read
the agent's tool-call formats (`tools.parse_tool_calls`), so the agent passes its parser in; `looks_like_tool_call`
is the default for callers that do not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

OFF_TASK_TRAIN: tuple[str, ...] = (
    "What is the capital of France?",
    "Name a primary color.",
    "Who wrote Romeo and Juliet?",
    "Give me one tip for sleeping better.",
    "What is a synonym for happy?",
    "Say hello in Spanish.",
    "What do bees make?",
    "Describe the sky in three words.",
    "What is the boiling point of water in Celsius?",
    "Recommend a good habit for the morning.",
    "What is the opposite of cold?",
    "Name a fruit that is yellow.",
    "What is the largest planet in our solar system?",
    "How many legs does a spider have?",
    "Who was the first person to walk on the moon?",
    "What language is spoken in Brazil?",
    "Tell me a short joke.",
    "What is the chemical symbol for gold?",
    "Name a famous composer.",
    "What season comes after winter?",
    "How do you say thank you in French?",
    "What is the tallest animal?",
    "Suggest a name for a pet cat.",
    "What does a thermometer measure?",
    "Name a musical instrument with strings.",
    "What is the main ingredient of guacamole?",
    "Why do leaves change colour in autumn?",
    "What is the freezing point of water in Fahrenheit?",
    "Write one sentence about the ocean.",
    "Which continent is Egypt in?",
    "What is a baby dog called?",
    "Name a vegetable that is green.",
    "Who invented the telephone?",
    "What is the plural of mouse?",
    "Give me a word that means very big.",
    "How many days are in a week?",
    "What do you call a group of lions?",
    "Name a board game.",
    "What gas do plants take in?",
    "What is the hardest natural substance?",
    "Tell me something nice about dogs.",
    "What is the longest river in Africa?",
    "Which planet is known as the red planet?",
    "Name a sport played with a racket.",
    "What is the past tense of run?",
    "What shape has three sides?",
    "Give me a tip for staying focused.",
    "What is the currency of Japan?",
    "Who wrote Pride and Prejudice?",
    "What colour do you get by mixing blue and yellow?",
    "Name a bird that cannot fly.",
    "What is the capital of Canada?",
    "Describe a rainy day in one sentence.",
    "What do caterpillars turn into?",
    "Name something you find in a kitchen.",
    "What is the opposite of ancient?",
    "Which ocean is the largest?",
    "What is a haiku?",
    "Say good night in German.",
    "What organ pumps blood through the body?",
    "Recommend a hobby for a rainy weekend.",
    "What is the smallest prime number?",
    "Name a flower that smells sweet.",
    "What do pandas eat?",
)

OFF_TASK_EVAL: tuple[str, ...] = (
    "What is the capital of Italy?",
    "Name an animal that lives in the sea.",
    "Who painted the Mona Lisa?",
    "Give me a word that rhymes with cat.",
    "What colour is grass?",
    "Tell me a fun fact about the moon.",
    "What is the capital of Spain?",
    "Name a mammal that can fly.",
    "Who wrote Hamlet?",
    "What is a synonym for fast?",
    "How do you say hello in Italian?",
    "What do cows drink?",
    "Describe the sea in three words.",
    "Give me one tip for eating healthier.",
    "Which planet is closest to the sun?",
    "What is the opposite of loud?",
    "Name a fruit that is red.",
    "Who discovered penicillin?",
    "What is the main language of Mexico?",
    "Name a famous painter.",
    "What season has the longest days?",
    "Tell me a kind thing to say to a friend.",
    "What do you call a baby cat?",
    "Why is the sky blue?",
)

# The off-task check reads only whether a reply starts calling a tool, so it stops early (24 prompts x 3 models).
OFFTASK_TOKENS = 32


def replay_count(n_train: int, *, floor: int, share: float) -> int:
    """Replay answers to train on: `floor`, or `share` of the trained episodes if that is more, at most the pool.
    A fixed count fades as demonstrations grow (12 is 4 % of 280), and with it the habit's restraint."""
    return min(len(OFF_TASK_TRAIN), max(floor, math.ceil(share * n_train)))


def off_task_chats(questions: Sequence[str], systems: Sequence[str | None]) -> list[list[dict[str, str]]]:
    """Each question under one of the episodes' system prompts in turn (most used first): when every episode
    brings its own tools (BFCL cases do), the skill learns and is checked to leave unrelated questions alone under
    many tool lists, not under one."""
    chats = []
    for i, question in enumerate(questions):
        system = systems[i % len(systems)] if systems else None
        chats.append(
            ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        )
    return chats


def looks_like_tool_call(text: str) -> bool:
    """The default tool-call test: a `<tool_call>` tag anywhere, or a reply that starts as a JSON `{"name": ...}`.
    It misses fenced and Python-style calls; the agent injects its own parser instead (see `Consolidator`)."""
    return "<tool_call>" in text or bool(re.match(r"^\s*\{\s*\"name\"", text))


def call_rate(replies: Sequence[str], is_tool_call: Callable[[str], bool]) -> float:
    """The share of off-task replies that call a tool: what a habit leaking into unrelated answers looks like."""
    return sum(is_tool_call(reply) for reply in replies) / len(replies)


def agreement(replies: Sequence[str], base_replies: Sequence[str]) -> float:
    """The share of off-task replies identical (up to whitespace) to the base's own answer to the same chat."""
    return sum(_norm(a) == _norm(b) for a, b in zip(replies, base_replies, strict=True)) / len(replies)


def _norm(text: str) -> str:
    return " ".join(text.split())
