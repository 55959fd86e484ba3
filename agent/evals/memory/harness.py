"""The BFCL memory harness: each question of one user asked cold, in one of five modes, and judged by BFCL's rule.

Cold means a fresh prompt: no tools, no thread, no agent loop, and nothing recorded. The questions go straight to the
agent's `ChatModel` (`generate_batch`, greedy, `max_new_tokens` the same for every mode), never through `Agent.run`,
so no question ever reaches a buffer: one that did would be consolidated into the very adapter it measures.

Modes (what the model sees besides the question):
- `base`: nothing.
- `retrieval`: the `k` turns of that user's buffer most similar to the question (consolidated ones too, as if
  nothing had been consolidated), as notes in a system message (`agent.prompt.memory_notes`).
- `weights`: nothing, but the user's memory adapter (`<user>/memory`, current revision) is active.
- `weights+retrieval`: both.
- `context`: the user's whole conversation (every turn in the buffer, oldest first) as notes; only when every
  prompt fits the base's context with the answer's budget. Otherwise the scenario is reported `skipped`, never cut.

A control says how much of the accuracy is chance: each answer is also judged against another question of the same
user (a fixed derangement, seeded by the scenario), as if the model had answered that one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, Field

from agent.backends.protocol import ChatRequest, Generation, fit_request
from agent.errors import ContextLengthError
from agent.evals.memory.checker import is_correct
from agent.evals.memory.data import MemoryQuestion, check_scenario, load_questions
from agent.prompt import memory_notes
from memory.facts import MEMORY_SKILL
from skills.errors import SkillNotFoundError, UserError
from skills.messages import ChatMessage

Mode = Literal["base", "retrieval", "weights", "weights+retrieval", "context"]
MODES: tuple[Mode, ...] = ("base", "retrieval", "weights", "weights+retrieval", "context")
DEFAULT_K = 4
ANSWER_TOKENS = 48  # enough for a name, a number or a short phrase; the same for every mode


class MemoryAnswer(BaseModel):
    """One question's answer, as written to `--out` (one JSON line each)."""

    id: str
    scenario: str
    mode: Mode
    question: str
    answer: str
    correct: bool
    control_id: str = Field(description="the question whose acceptable answers the control judged this answer by")
    control_correct: bool
    prompt_tokens: int
    answer_tokens: int


class MemoryEvalReport(BaseModel):
    """One mode on one scenario: accuracy, the control's accuracy, prompt and answer length, speed."""

    scenario: str
    mode: Mode
    k: int = 0
    skill: str | None = Field(None, description="the memory adapter used, NAME@REV")
    n: int = 0
    accuracy: float = 0.0
    control_accuracy: float = 0.0
    prompt_tokens_mean: float = 0.0
    answer_tokens_mean: float = 0.0
    seconds_per_question: float = 0.0
    skipped: bool = False
    reason: str = ""
    answers: list[MemoryAnswer] = Field(default_factory=list, exclude=True)

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def write_answers(self, path: Path) -> None:
        """Append this report's answers to `path`, one JSON line each (several modes share one `--out` file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.writelines(answer.model_dump_json() + "\n" for answer in self.answers)


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise UserError(f"unknown memory mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    return cast(Mode, mode)


def memory_skill(skills: Any, user: str) -> tuple[str, int]:
    """(`<user>/memory`, its current revision), read through a store view that may read the user's skills
    (`Agent(instance=user).skills`, or the process-wide `LayeredStore`)."""
    name = f"{user}/{MEMORY_SKILL}"
    try:
        return name, skills.get(name).current
    except SkillNotFoundError as error:
        raise UserError(
            f"user {user!r} has no memory adapter ({name})",
            hint=f"habitloop practice memory --scenario {user}, then habitloop consolidate --instance {user} --facts",
        ) from error


def control_pairing(questions: Sequence[MemoryQuestion], scenario: str) -> dict[str, str]:
    """question id -> the id of the question its answer is also judged against: a derangement (no question is its
    own control), the same for every run and mode of a scenario (Sattolo's shuffle, seeded by the scenario)."""
    ids = [q.id for q in questions]
    if len(ids) < 2:
        raise UserError(f"the control needs at least two questions of {scenario!r}, got {len(ids)}")
    order = list(range(len(ids)))
    rng = random.Random(f"bfcl-memory-control:{scenario}")
    for i in range(len(order) - 1, 0, -1):  # Sattolo: j < i, so the permutation is one cycle, without fixed points
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]
    return {ids[i]: ids[order[i]] for i in range(len(ids))}


def check_ready(agent: Any, mode: Mode) -> tuple[str, int] | None:
    """Fail with the fix, before anything runs, when `mode` needs what the agent's user lacks: their memory adapter
    (returned, for the weights modes) or any recorded turn (for the modes that show notes)."""
    if mode in ("retrieval", "weights+retrieval", "context") and not agent.buffer.list(
        instance=agent.instance, limit=1
    ):
        raise UserError(
            f"user {agent.instance!r} has told the agent nothing yet (the buffer holds none of their turns)",
            hint=f"habitloop practice memory --scenario {agent.instance}",
        )
    return memory_skill(agent.skills, agent.instance) if mode in ("weights", "weights+retrieval") else None


def user_turns(agent: Any) -> list[str]:
    """Everything the agent's user said, oldest first (the buffer lists newest first)."""
    return [t.task for t in reversed(agent.buffer.list(instance=agent.instance))]


def retrieved_turns(agent: Any, question: str, k: int) -> list[str]:
    """The `k` turns of the agent's user most similar to `question`, consolidated ones included."""
    hits = agent.buffer.search(question, k=k, status=None, consolidated=None, instance=agent.instance)
    return [t.task for t, _ in hits]


def question_messages(question: str, notes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The prompt of one question: the notes (if any) as a system message, then the question as the user's turn."""
    messages = [ChatMessage.system(memory_notes(list(notes)))] if notes else []
    return [m.model_dump() for m in [*messages, ChatMessage.user(question)]]


def build_requests(
    agent: Any, questions: Sequence[MemoryQuestion], mode: Mode, *, k: int, max_new_tokens: int
) -> tuple[list[ChatRequest], str | None]:
    """Every question's request in `mode`, and the memory adapter used (NAME@REV) if any."""
    skill = check_ready(agent, mode)
    skills = [skill] if skill is not None else []
    whole = user_turns(agent) if mode == "context" else []
    requests = []
    for q in questions:
        notes = retrieved_turns(agent, q.question, k) if mode in ("retrieval", "weights+retrieval") else whole
        requests.append(
            ChatRequest(messages=question_messages(q.question, notes), skills=skills, max_new_tokens=max_new_tokens)
        )
    return requests, (f"{skills[0][0]}@{skills[0][1]}" if skills else None)


def misfit(model: Any, requests: Sequence[ChatRequest]) -> str | None:
    """Why some request does not fit the model's context with its whole answer budget (None: they all fit)."""
    for request in requests:
        try:
            fit_request(model, request, strict=True)
        except ContextLengthError as error:
            return error.message
    return None


def generate_in_batches(
    model: Any, requests: Sequence[ChatRequest], batch: int, on_batch: Callable[[int], None] | None = None
) -> tuple[list[Generation], float]:
    """Every request's generation, `batch` at a time, and the wall time per request."""
    if batch < 1:
        raise UserError("the batch size must be at least 1")
    started = time.perf_counter()
    generations: list[Generation] = []
    for i in range(0, len(requests), batch):
        chunk = list(requests[i : i + batch])
        generations.extend(model.generate_batch(chunk))
        if on_batch is not None:
            on_batch(len(chunk))
    return generations, (time.perf_counter() - started) / max(1, len(requests))


def evaluate_memory(
    agent: Any,
    scenario: str,
    mode: str = "base",
    *,
    questions: Sequence[MemoryQuestion] | None = None,
    limit: int | None = None,
    k: int = DEFAULT_K,
    max_new_tokens: int = ANSWER_TOKENS,
    batch: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> MemoryEvalReport:
    """Ask the scenario's questions (the first `limit`; or the `questions` given) of `agent`, the scenario's own
    instance (`Agent(instance=scenario)`), in one mode. The control pairing is drawn over all the questions given,
    before `limit`, so a shorter run judges each answer against the same control question as a full one."""
    checked = check_mode(mode)
    check_scenario(scenario)
    if agent.instance != scenario:
        raise UserError(
            f"the agent is instance {agent.instance!r}, not the scenario's user {scenario!r}",
            hint=f"evaluate with Agent(instance={scenario!r})",
        )
    pool = list(questions) if questions is not None else load_questions(agent.settings.home, scenario)
    pairing = control_pairing(pool, scenario)
    chosen = pool[:limit] if limit is not None else pool
    requests, skill = build_requests(agent, chosen, checked, k=k, max_new_tokens=max_new_tokens)
    report = MemoryEvalReport(scenario=scenario, mode=checked, k=k if "retrieval" in checked else 0, skill=skill)
    if checked == "context" and (reason := misfit(agent.model, requests)) is not None:
        return report.model_copy(update={"skipped": True, "reason": f"the whole conversation does not fit: {reason}"})
    generations, seconds = generate_in_batches(agent.model, requests, batch, on_batch)
    by_id = {q.id: q for q in pool}
    answers = [
        MemoryAnswer(
            id=q.id,
            scenario=scenario,
            mode=checked,
            question=q.question,
            answer=g.text,
            correct=is_correct(g.text, q.answers),
            control_id=pairing[q.id],
            control_correct=is_correct(g.text, by_id[pairing[q.id]].answers),
            prompt_tokens=g.prompt_tokens,
            answer_tokens=g.completion_tokens,
        )
        for q, g in zip(chosen, generations, strict=True)
    ]
    n = len(answers)
    return report.model_copy(
        update={
            "n": n,
            "accuracy": sum(a.correct for a in answers) / n if n else 0.0,
            "control_accuracy": sum(a.control_correct for a in answers) / n if n else 0.0,
            "prompt_tokens_mean": sum(a.prompt_tokens for a in answers) / n if n else 0.0,
            "answer_tokens_mean": sum(a.answer_tokens for a in answers) / n if n else 0.0,
            "seconds_per_question": seconds,
            "answers": answers,
        }
    )
