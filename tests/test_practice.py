"""The practice loop (rejection sampling) that `Agent.practice` and BFCL practice share, on plain functions."""

from __future__ import annotations

import pytest

from agent.practice import rejection_sample
from skills.errors import UserError


def test_each_item_is_sampled_until_its_first_success_a_batch_at_a_time() -> None:
    rounds: list[list[str]] = []
    solved_at = {"a": 1, "b": 3, "c": 99, "d": 2}  # the attempt that first succeeds

    def sample(items: list[str]) -> list[tuple[str, bool]]:
        rounds.append(list(items))
        tries = {item: sum(item in r for r in rounds) for item in items}
        return [(f"{item}{tries[item]}", tries[item] >= solved_at[item]) for item in items]

    done: list[tuple[str, bool]] = []
    practiced = rejection_sample(
        ["a", "b", "c", "d"], sample, attempts=3, batch=3, on_done=lambda i, s: done.append((i, s))
    )
    assert rounds == [["a", "b", "c"], ["b", "c"], ["b", "c"], ["d"], ["d"]], "unsolved items only; batches in turn"
    assert [(p.item, p.samples, p.solved) for p in practiced] == [
        ("a", ["a1"], True),
        ("b", ["b1", "b2", "b3"], True),
        ("c", ["c1", "c2", "c3"], False),
        ("d", ["d1", "d2"], True),
    ]
    assert done == [("a", True), ("b", True), ("c", False), ("d", True)], "each item once, when it is finished"


def test_a_practice_that_would_draw_nothing_is_refused() -> None:
    with pytest.raises(UserError, match="attempts"):
        rejection_sample(["a"], lambda items: [], attempts=0)
    with pytest.raises(UserError, match="batch"):
        rejection_sample(["a"], lambda items: [], attempts=1, batch=0)
