"""Practice: rejection sampling (STaR-style), the one loop behind `Agent.practice` and BFCL practice.

Each item (a task, a BFCL case) is sampled up to `attempts` times and judged each time; its first success ends it.
Items go `batch` at a time: each attempt round samples the batch's unsolved items together (BFCL answers them as one
`Agent.run_batch`; `Agent.practice` takes one task at a time). Recording the samples and judging them is the caller's
`sample` function; this loop only decides what is sampled again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, TypeVar

from pydantic import BaseModel

from skills.errors import UserError

Item = TypeVar("Item")
Sample = TypeVar("Sample")


class PracticeReport(BaseModel):
    """What `agent.practice` did for one task: every attempt is recorded in the buffer; successes train skills."""

    task: str
    attempts: int
    successes: int
    run_ids: list[str]


@dataclass(frozen=True)
class Practiced(Generic[Item, Sample]):
    """One item's practice: every sample drawn for it, in order (the last one succeeded when `solved`)."""

    item: Item
    samples: list[Sample] = field(default_factory=list)
    solved: bool = False


def check_attempts(attempts: int) -> None:
    """Refuse a practice that would draw nothing."""
    if attempts < 1:
        raise UserError("attempts must be at least 1")


def rejection_sample(
    items: Iterable[Item],
    sample: Callable[[list[Item]], Sequence[tuple[Sample, bool]]],
    *,
    attempts: int,
    batch: int = 1,
    on_done: Callable[[Item, bool], None] | None = None,
) -> list[Practiced[Item, Sample]]:
    """Practise `items`, `batch` at a time (read lazily, a batch at a time), each up to `attempts` times.

    `sample(items)` draws one sample per item and returns each with its verdict (True: a success), in order.
    `on_done(item, solved)` is called when an item is finished: solved, or out of attempts. Returns each item's
    samples, in the order given."""
    check_attempts(attempts)
    if batch < 1:
        raise UserError("the batch size must be at least 1")
    practiced: list[Practiced[Item, Sample]] = []
    remaining = iter(items)
    while chunk := list(islice(remaining, batch)):
        practiced += _practise_chunk(chunk, sample, attempts, on_done)
    return practiced


def _practise_chunk(
    chunk: list[Item],
    sample: Callable[[list[Item]], Sequence[tuple[Sample, bool]]],
    attempts: int,
    on_done: Callable[[Item, bool], None] | None,
) -> list[Practiced[Item, Sample]]:
    """One batch: attempt rounds over its unsolved items until each is solved or out of attempts."""
    samples: list[list[Sample]] = [[] for _ in chunk]
    solved = [False] * len(chunk)
    pending = list(range(len(chunk)))
    for attempt in range(attempts):
        last = attempt + 1 == attempts
        outcomes = sample([chunk[i] for i in pending])
        unsolved = []
        for i, (drawn, success) in zip(pending, outcomes, strict=True):
            samples[i].append(drawn)
            solved[i] = success
            if not success and not last:
                unsolved.append(i)
            elif on_done is not None:
                on_done(chunk[i], success)
        pending = unsolved
        if not pending:
            break
    return [Practiced(item, drawn, success) for item, drawn, success in zip(chunk, samples, solved, strict=True)]
