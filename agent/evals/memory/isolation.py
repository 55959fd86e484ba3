"""Isolation between users' memories, measured: does one user's memory adapter tell another user about its owner?

Every user's questions are asked, cold, with every other user's memory adapter active (the `weights` mode of the
harness, with someone else's adapter). An answer leaks when it contains one of the adapter owner's acceptable answers
(BFCL's rule) that is not also an acceptable answer of the asker's own questions ("7" may be true of both). The same
pairs are asked of the base alone: the base leaks at some rate too, by chance (a common first name, a number), and
only the difference says the adapter carries its owner's facts to someone else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from agent.backends.protocol import ChatRequest
from agent.evals.memory.checker import is_correct, standardize
from agent.evals.memory.data import MemoryQuestion
from agent.evals.memory.harness import ANSWER_TOKENS, generate_in_batches, memory_skill, question_messages


class LeakCell(BaseModel):
    """One (asker, adapter owner) pair: how often the asker's answers carried the owner's facts."""

    asker: str = Field(description="whose questions were asked")
    owner: str = Field(description="whose memory adapter was active")
    skill: str = Field(description="the owner's adapter, NAME@REV")
    n: int
    leak_rate: float = Field(description="share of answers, with the owner's adapter, holding the owner's answers")
    base_leak_rate: float = Field(description="the same share for the base alone on the same questions: chance")


def owner_only_answers(owner: Sequence[MemoryQuestion], asker: Sequence[MemoryQuestion]) -> list[str]:
    """The owner's acceptable answers that are no acceptable answer of the asker's (compared standardized)."""
    theirs = {standardize(a) for q in asker for a in q.answers}
    return list(dict.fromkeys(a for q in owner for a in q.answers if standardize(a) not in theirs and a.strip()))


def _answers(
    model: Any, questions: Sequence[MemoryQuestion], skills: list[tuple[str, int]], max_new_tokens: int, batch: int
) -> list[str]:
    requests = [
        ChatRequest(messages=question_messages(q.question), skills=skills, max_new_tokens=max_new_tokens)
        for q in questions
    ]
    generations, _ = generate_in_batches(model, requests, batch)
    return [g.text for g in generations]


def leak_matrix(
    model: Any,
    skills: Any,
    questions: Mapping[str, Sequence[MemoryQuestion]],
    *,
    max_new_tokens: int = ANSWER_TOKENS,
    batch: int = 8,
    on_cell: Callable[[LeakCell], None] | None = None,
) -> list[LeakCell]:
    """Ask each user's `questions` with each other user's memory adapter active, and with the base alone.

    `model` must be able to load every user's adapter (the agent's local model, whose residency reads every
    instance's skills by their qualified names); `skills` is a view that resolves every `<user>/memory` (a
    `LayeredStore` with `instance=None`). A user without a memory adapter fails at once with the fix.
    """
    users = list(questions)
    adapters = {user: memory_skill(skills, user) for user in users}  # every adapter checked before anything runs
    base = {user: _answers(model, questions[user], [], max_new_tokens, batch) for user in users}
    cells = []
    for asker in users:
        for owner in users:
            if owner == asker:
                continue
            leaks = owner_only_answers(questions[owner], questions[asker])
            replies = _answers(model, questions[asker], [adapters[owner]], max_new_tokens, batch)
            n = len(replies)
            cell = LeakCell(
                asker=asker,
                owner=owner,
                skill=f"{adapters[owner][0]}@{adapters[owner][1]}",
                n=n,
                leak_rate=sum(is_correct(r, leaks) for r in replies) / n if n else 0.0,
                base_leak_rate=sum(is_correct(r, leaks) for r in base[asker]) / n if n else 0.0,
            )
            cells.append(cell)
            if on_cell is not None:
                on_cell(cell)
    return cells
