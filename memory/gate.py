"""The gate: a candidate revision replaces what it would replace only if it is not worse anywhere it counts.

Candidate and current model (the current revision, or the base for a new skill) are scored on the same `Trial`:
first-turn agreement with held-out episodes and with episodes of earlier revisions (regression); on off-task
prompts, how often each calls a tool and how often it still answers as the base does; and, on held-out mismatched
cases (a held-out question under another held-out episode's tools, none of which fits it: `memory.negatives`), how
often each calls one anyway. `decide` compares the two.

Scoring is a seam: `Consolidator(scorer=...)` takes any `ModelScorer`; the default is a `Scorer`, which generates
with the shared base and tests replies for tool calls with the check it is given (`is_tool_call`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from memory.dataset import Chat, first_reply, task_prompt
from memory.offtask import OFFTASK_TOKENS, agreement, call_rate, looks_like_tool_call
from memory.trajectory import Trajectory
from skills.generation import generate


class Scores(BaseModel):
    """One model's evaluation: first-turn agreement on held-out and regression episodes; off-task behaviour; calls
    on held-out mismatched cases (None: the relevance check was not run, e.g. too few held-out episodes)."""

    heldout_match: float | None = None
    regression_match: float | None = None
    offtask_call_rate: float = 0.0
    offtask_agreement: float = 1.0
    mismatched_call_rate: float | None = None


@dataclass(frozen=True)
class Trial:
    """What candidate and current model are both scored on; `base_offtask` is the base's answer to each off-task
    chat (what a model that leaves them alone says); `mismatched_chats` are held-out questions under tools that do
    not fit them, where any call is a wrong one."""

    holdout: Sequence[Trajectory]
    regression: Sequence[Trajectory]
    offtask_chats: list[Chat]
    base_offtask: list[str]
    mismatched_chats: list[Chat] = field(default_factory=list)


class ModelScorer(Protocol):
    """Scores one model (the shared base with the adapter under test active) on a trial."""

    def __call__(self, model: Any, trial: Trial) -> Scores: ...


class Scorer:
    """The default scorer: greedy replies of at most `max_new_tokens` (off-task ones `OFFTASK_TOKENS`), compared with
    the wanted reply by `match(got, wanted)` (default: equal up to whitespace; the facts recipe passes its recall
    test); `is_tool_call` decides which off-task and mismatched replies call a tool (default: `looks_like_tool_call`).
    Mismatched replies get the whole `max_new_tokens`: a call to a real function's schema is longer than
    `OFFTASK_TOKENS`, and a call cut short would not parse as one."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_new_tokens: int = 48,
        is_tool_call: Callable[[str], bool] = looks_like_tool_call,
        match: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.is_tool_call = is_tool_call
        self.match = match or same_text

    def __call__(self, model: Any, trial: Trial) -> Scores:
        off = self.generate(model, trial.offtask_chats, OFFTASK_TOKENS)
        return Scores(
            heldout_match=self.match_rate(model, trial.holdout),
            regression_match=self.match_rate(model, trial.regression),
            offtask_call_rate=self.call_rate(off),
            offtask_agreement=agreement(off, trial.base_offtask),
            mismatched_call_rate=self.call_rate(self.generate(model, trial.mismatched_chats))
            if trial.mismatched_chats
            else None,
        )

    def generate(self, model: Any, chats: list[Chat], limit: int | None = None) -> list[str]:
        """`model`'s reply to each chat, at most `limit` tokens (and never more than `max_new_tokens`)."""
        tokens = min(self.max_new_tokens, limit or self.max_new_tokens)
        return generate(model, self.tokenizer, chats, max_new_tokens=tokens) if chats else []

    def match_rate(self, model: Any, episodes: Sequence[Trajectory]) -> float | None:
        """The share of episodes whose first reply `model` reproduces from their prompt; None when none has one."""
        scored = [(e, first_reply(e)) for e in episodes]
        wanted = [(e, r) for e, r in scored if r is not None]
        if not wanted:
            return None
        replies = self.generate(model, [task_prompt(e) for e, _ in wanted])
        same = [self.match(got, want) for got, (_, want) in zip(replies, wanted, strict=True)]
        return sum(same) / len(wanted)

    def call_rate(self, replies: Sequence[str]) -> float:
        """The share of `replies` that call a tool, by this scorer's `is_tool_call`."""
        return call_rate(replies, self.is_tool_call)


def same_text(got: str, wanted: str) -> bool:
    """Equal up to whitespace: how a habit's reply is checked (a tool call must be reproduced exactly)."""
    return " ".join(got.split()) == " ".join(wanted.split())


def decide(
    candidate: Scores, current: Scores, margin: float, relevance_margin: float | None = None
) -> tuple[bool, str]:
    """(promoted, reason). Promote unless the candidate is worse than what it replaces by more than `margin`, anywhere
    it counts: held-out and regression agreement must not drop, it must not call tools off-task more often, nor on
    held-out mismatched cases (by more than `relevance_margin`, default `margin`; when both were measured)."""
    problems = []
    for name in ("heldout_match", "regression_match"):
        new, old = getattr(candidate, name), getattr(current, name)
        if new is not None and old is not None and new < old - margin:
            problems.append(f"{name} {new:.2f} < {old:.2f}")
    if candidate.offtask_call_rate > current.offtask_call_rate + margin:
        problems.append(f"offtask_call_rate {candidate.offtask_call_rate:.2f} > {current.offtask_call_rate:.2f}")
    allowed = margin if relevance_margin is None else relevance_margin
    new_calls, old_calls = candidate.mismatched_call_rate, current.mismatched_call_rate
    mismatched = new_calls is not None and old_calls is not None
    if new_calls is not None and old_calls is not None and new_calls > old_calls + allowed:
        problems.append(f"mismatched_call_rate {new_calls:.2f} > {old_calls:.2f}")
    if problems:
        return False, "rejected: " + "; ".join(problems)
    relevance = f", mismatched calls {new_calls:.2f} vs {old_calls:.2f}" if mismatched else ""
    return True, (
        f"promoted: held-out {candidate.heldout_match} vs {current.heldout_match}, "
        f"off-task calls {candidate.offtask_call_rate:.2f} vs {current.offtask_call_rate:.2f}{relevance}"
    )
