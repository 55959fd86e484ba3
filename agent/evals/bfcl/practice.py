"""Learning from BFCL's train split: the user's demonstrations, and practice with BFCL's checker as the judge.

- `record_demonstrations`: each train case's ground-truth call (the first acceptable value of each parameter, optional
  ones left out unless `state_optional`) recorded with `agent.learn_from` as a successful episode: the case's system
  prompt (its tools) and the reply in the exact `<tool_call>{"name": ..., "arguments": ...}</tool_call>` format.
- `practice`: rejection sampling (`agent.practice.rejection_sample`, the loop `Agent.practice` runs too) where each
  case has its own tools and its own judge: up to `attempts` samples per case through the agent loop, each judged by
  the checker and kept in the buffer with that verdict; the first success ends a case. Successes are what the next
  consolidation trains on. Cases go `batch` at a time: each attempt round samples the chunk's unsolved cases as one
  `Agent.run_batch`.

Both refuse test-split cases: a test item must never become training data; and cases that expect no call
(`irrelevance`), whatever their split: that category is a measurement of restraint, never training data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from pydantic import BaseModel

from agent.evals.bfcl.data import BfclCase
from agent.evals.bfcl.harness import CaseResult, Mode, call_text, case_tools, run_cases, tool_name
from agent.practice import check_attempts, rejection_sample
from agent.prompt import system_prompt
from memory.trajectory import Outcome, Trajectory
from skills.errors import UserError


class PracticeSummary(BaseModel):
    """What one practice round did: cases tried, samples drawn, cases solved, and the successful episode ids."""

    cases: int
    attempts: int
    solved: int
    episode_ids: list[str]


def _train_only(cases: Sequence[BfclCase]) -> None:
    measured = [c.id for c in cases if c.expects_no_call]
    if measured:
        raise UserError(
            f"{len(measured)} of these cases expect no call (e.g. {measured[0]}); they are measured, never trained on",
            hint="practice and demonstrations use simple_python, multiple, live_simple or live_multiple",
        )
    test = [c.id for c in cases if c.split != "train"]
    if test:
        raise UserError(
            f"{len(test)} of these cases are in the test split (e.g. {test[0]}); they must never be trained on",
            hint="practice and demonstrations use --split train",
        )


def demonstration(case: BfclCase, *, state_optional: bool = False) -> Trajectory:
    """The case's ground-truth call as a user's demonstration, with the case's own system prompt."""
    truth = case.ground_truth(state_optional=state_optional)
    reply = call_text({"name": tool_name(truth["name"]), "arguments": truth["arguments"]})
    return Trajectory.demonstration(case.task, reply, system_prompt=system_prompt(case_tools(case).schemas()))


def task_chats(cases: Sequence[BfclCase]) -> list[list[dict[str, str]]]:
    """The chats the agent starts train cases from (the functions as its tools, the task), without a reply: what a
    skill composed with a tool habit replays so as to leave the habit's calls alone (`memory.composed`)."""
    _train_only(cases)
    chats = []
    for case in cases:
        system = system_prompt(case_tools(case).schemas()) or ""
        chats.append([{"role": "system", "content": system}, {"role": "user", "content": case.task}])
    return chats


def record_demonstrations(
    agent: Any,
    cases: Sequence[BfclCase],
    *,
    state_optional: bool = False,
    on_case: Callable[[BfclCase], None] | None = None,
) -> list[Trajectory]:
    """Record each case's ground truth as a successful episode (`agent.learn_from`); `state_optional`: see
    `BfclCase.ground_truth`."""
    _train_only(cases)
    recorded = []
    for case in cases:
        recorded.append(agent.learn_from(demonstration(case, state_optional=state_optional)))
        if on_case is not None:
            on_case(case)
    return recorded


def _episode(result: CaseResult, run: Any) -> Trajectory:
    """The practice run as an episode: the checker's verdict on the call replaces the loop's own outcome (one step
    means the loop stopped before any tool ran and judged "no final answer"), and the episode keeps only the task and
    the reply."""
    return cast(
        Trajectory,
        run.trajectory.model_copy(
            update={
                "messages": run.trajectory.run_messages[:2],
                "context_messages": 0,
                "answer": result.text,
                "outcome": Outcome(
                    status="success" if result.valid else "failure",
                    score=float(result.valid),
                    judged_by="checker",
                    reason=result.reason,
                ),
            }
        ),
    )


def practice(
    agent: Any,
    cases: Sequence[BfclCase],
    *,
    attempts: int = 4,
    skill: str | None = None,
    temperature: float = 0.7,
    on_case: Callable[[BfclCase, bool], None] | None = None,
    batch: int = 8,
) -> PracticeSummary:
    """Sample up to `attempts` replies per case (with `skill` active if given), judged by BFCL's checker; `batch`
    cases are sampled together (one `Agent.run_batch` per attempt round)."""
    check_attempts(attempts)
    _train_only(cases)
    if skill is not None:
        agent.store.get(skill)
    mode: Mode = "skill" if skill else "base"
    kept: list[str] = []  # the successes' episode ids, in the order they were solved

    def sample(pending: list[BfclCase]) -> list[tuple[Trajectory, bool]]:
        outcomes = run_cases(agent, pending, mode=mode, skill=skill, temperature=temperature, keep=True)
        judged = []
        for result, run in outcomes:
            episode = _episode(result, run)
            agent.buffer.add(episode)
            if result.valid:
                kept.append(episode.id)
            judged.append((episode, result.valid))
        return judged

    practiced = rejection_sample(cases, sample, attempts=attempts, batch=batch, on_done=on_case)
    return PracticeSummary(
        cases=len(cases),
        attempts=sum(len(p.samples) for p in practiced),
        solved=sum(p.solved for p in practiced),
        episode_ids=kept,
    )
