"""BFCL memory data, offline: what five users tell an assistant, and the questions asked of each afterwards.

The files come from the same bfcl-eval wheel as BFCL's other categories (`agent.evals.bfcl.data` finds and extracts
it): `memory_prereq_conversation/memory_<scenario>.json` (the conversations: one user per scenario, each line one
conversation of user turns), `BFCL_v4_memory.json` (the questions) and `possible_answer/BFCL_v4_memory.json` (the
acceptable answers, and the `source` sentence each answer comes from).

Scenarios are split once, by whoever measures: DEV (customer, finance, notetaker) is for developing and tuning, FINAL
(healthcare, student) only for the final numbers. Every default here is DEV.

A question's `source` is for measurement only (which conversation holds the answer, `source_conversations`): it never
enters a prompt or a training set, or the evaluation would show the model the answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agent.evals.bfcl.data import DATA_PREFIX, extract_members, read_lines
from skills.errors import OperatorError, UserError

SCENARIOS: tuple[str, ...] = ("customer", "finance", "healthcare", "notetaker", "student")
DEV_SCENARIOS: tuple[str, ...] = ("customer", "finance", "notetaker")
FINAL_SCENARIOS: tuple[str, ...] = ("healthcare", "student")
QUESTIONS_FILE = "BFCL_v4_memory.json"
CONVERSATIONS_FOLDER = "memory_prereq_conversation"
# A source fragment shorter than this many words ("Oh!", "I see") would match conversations by chance.
_MIN_FRAGMENT_WORDS = 3


class Conversation(BaseModel):
    """One conversation of one user (a scenario is one user): the user's turns, in order."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="BFCL's id, e.g. memory_prereq_32-notetaker-0; also the thread it is played on")
    topic: str
    scenario: str
    turns: list[str] = Field(description="what the user said, one string per turn")


class MemoryQuestion(BaseModel):
    """A question about what the user said earlier, with every acceptable answer."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="BFCL's id, e.g. memory_0-customer-0")
    scenario: str
    question: str
    answers: list[str] = Field(description="acceptable strings (BFCL's ground_truth); one must occur in the answer")
    source: str = Field(description="the sentence the answer comes from: for measurement only, never in a prompt")


def check_scenario(scenario: str) -> str:
    if scenario not in SCENARIOS:
        raise UserError(f"unknown memory scenario {scenario!r}", hint=f"use one of: {', '.join(SCENARIOS)}")
    return scenario


def scenario_files(scenario: str) -> tuple[str, str, str]:
    """The wheel members a scenario reads: its conversations, the questions, the possible answers."""
    check_scenario(scenario)
    return (
        f"{DATA_PREFIX}{CONVERSATIONS_FOLDER}/memory_{scenario}.json",
        DATA_PREFIX + QUESTIONS_FILE,
        f"{DATA_PREFIX}possible_answer/{QUESTIONS_FILE}",
    )


def _paths(home: Path, scenario: str, download: bool) -> tuple[Path, Path, Path]:
    members = scenario_files(scenario)
    data = extract_members(home, members, download=download)
    conversations, questions, answers = (data / m.removeprefix(DATA_PREFIX) for m in members)
    return conversations, questions, answers


def _user_text(messages: Sequence[dict[str, object]]) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user").strip()


def load_conversations(home: Path, scenario: str, *, download: bool = True) -> list[Conversation]:
    """The scenario's conversations, in BFCL's order."""
    path, _, _ = _paths(home, scenario, download)
    conversations = []
    for row in read_lines(path):
        turns = [_user_text(turn) for turn in row.get("question", [])]
        if not all(turns):
            raise OperatorError(f"{path}: conversation {row.get('id')!r} has an empty turn", hint="extract it again")
        conversations.append(Conversation(id=row["id"], topic=row.get("topic", ""), scenario=scenario, turns=turns))
    return conversations


def load_questions(
    home: Path, scenario: str, *, limit: int | None = None, download: bool = True
) -> list[MemoryQuestion]:
    """The scenario's questions that have possible answers (in BFCL's order), the first `limit` of them."""
    _, questions_path, answers_path = _paths(home, scenario, download)
    answers = {row["id"]: row for row in read_lines(answers_path)}
    questions = []
    for row in read_lines(questions_path):
        if row.get("scenario") != scenario or row["id"] not in answers:
            continue
        answer = answers[row["id"]]
        questions.append(
            MemoryQuestion(
                id=row["id"],
                scenario=scenario,
                question=_user_text(row["question"][0]) if row.get("question") else "",
                answers=[str(a) for a in answer["ground_truth"]],
                source=str(answer.get("source", "")),
            )
        )
    return questions[:limit] if limit is not None else questions


def normalized(text: str) -> str:
    """Lower-case words separated by single spaces: curly quotes, dashes and punctuation are not words."""
    folded = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(re.sub(r"[^\w']+", " ", folded).split())


def source_fragments(source: str) -> list[str]:
    """The normalized sentences of a source, split where BFCL cut or joined it ("...", sentence
    ends, ":", ";", dashes, brackets, double quotes), long enough
    to identify a conversation (at least three words)."""
    pieces = re.split(r"\.\.\.|[….!?:;()\"\u201c\u201d\u2014\u2013]", source)
    fragments = [normalized(piece) for piece in pieces]
    return [f for f in fragments if len(f.split()) >= _MIN_FRAGMENT_WORDS]


def source_conversations(question: MemoryQuestion, conversations: Sequence[Conversation]) -> list[str]:
    """The ids of the conversations that hold the question's source: some fragment of it occurs in the
    conversation's text (normalized). Empty when none does (a paraphrased source)."""
    fragments = source_fragments(question.source)
    texts = {c.id: normalized(" ".join(c.turns)) for c in conversations}
    return [cid for cid, text in texts.items() if any(f in text for f in fragments)]
