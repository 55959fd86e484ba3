"""The facts recipe: what a user told the agent becomes training data for their memory adapter.

A user's turns are facts, not demonstrations: nothing judged them, and the reply the agent gave is not what should
be learned. So this recipe reads only what the user said (each episode's task), cuts it into chunks, and makes
question/answer pairs whose answers hold the facts; the adapter learns to give those answers with the chunk absent.
The model that writes the data is the base itself (nothing else is available offline). Two recipes:

- `turns`: the user's own words as language-model targets. The prompt is a recall request that quotes the chunk's
  opening words; the target is the whole chunk. Cheap, and nothing the base writes can be wrong, but the prompts
  look nothing like the questions a user asks later.
- `self-study` (context distillation, as Cartridges / SEAL / Generative Adapter do): the base, with a sentence of
  the user's in its prompt, writes a question that sentence answers; the adapter learns to answer it with the
  sentence absent. `answers="base"` has the base answer each question with the whole chunk in its prompt (context
  distillation proper); `answers="source"` (the default) answers with the user's sentence itself, so a weak base's
  wrong answers are never learned; only its questions are.

Some generated questions are held out (by a hash of their text, so a rerun holds out the same) for the gate: the
candidate must recall their answers at least as well as the adapter it replaces (`answer_recall`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from memory.trajectory import Trajectory
from skills.messages import ChatMessage
from skills.train import ChatExample

Chat = list[dict[str, str]]
# Generates one reply per chat, at most `tokens` new tokens (the base, adapters off).
Generate = Callable[[list[Chat], int], list[str]]

MEMORY_SKILL = "memory"
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")
_STOP = set(
    "a an the of to in on for and or is are was were be been am i me my mine you your it its this that these those "
    "what which who whom when where why how do does did have has had with by at from as so but not no yes can could "
    "would should will shall may might must about into than then there their they them he she his her we our us".split()
)
# The base writes a question about one sentence at a time, shown three worked examples as earlier turns of the chat
# (a 135M instruct model follows turns, not a few-shot block inside one message). Hand-written; not from any benchmark.
QUESTION_ASK = "Write one short question that this sentence answers:\n"
QUESTION_SHOTS: tuple[tuple[str, str], ...] = (
    ("I moved to Denver in 2019 for work.", "When did I move to Denver?"),
    ("My sister's dog is called Biscuit, and he loves the beach.", "What is my sister's dog called?"),
    ("Thursday: dentist at 3 PM, then pick up the dry cleaning.", "What time is my dentist appointment on Thursday?"),
)
RECALL_PROMPT = 'What did I tell you that starts "{opening}"?'


class FactsConfig(BaseModel):
    """How what a user said becomes training data; stored with the consolidation recipe."""

    recipe: Literal["self-study", "turns"] = Field("self-study", description="how the training pairs are made")
    answers: Literal["base", "source"] = Field(
        "source", description="self-study answers: the base's own (chunk in its prompt), or the chunk's best sentence"
    )
    chunk_chars: int = Field(400, ge=40, description="a user turn longer than this is cut at sentence ends")
    questions_per_sentence: int = Field(1, ge=1, le=3, description="self-study questions asked per sentence")
    min_words: int = Field(3, ge=0, description="sentences with fewer content words (greetings) are not asked about")
    question_tokens: int = Field(24, ge=8, description="tokens the base may write one question in")
    answer_tokens: int = Field(48, ge=8, description="tokens of each self-study answer the base writes")
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of generated questions kept for the gate")


@dataclass(frozen=True)
class Chunk:
    """A piece of what the user said, with the episode it came from."""

    text: str
    episode_id: str


@dataclass(frozen=True)
class FactPair:
    """One training pair: a question (or recall request) and the answer that holds the fact."""

    question: str
    answer: str
    episode_id: str

    def example(self) -> ChatExample:
        return ChatExample.from_pair(self.question, self.answer, source_id=self.episode_id)


def chunks_of(episodes: Sequence[Trajectory], max_chars: int) -> list[Chunk]:
    """Each episode's user turn, oldest first, cut at sentence ends into chunks of at most ~`max_chars`."""
    chunks = []
    for episode in sorted(episodes, key=lambda e: (e.started_at, e.id)):
        current = ""
        for sentence in (s.strip() for s in _SENTENCE.split(episode.task) if s.strip()):
            if current and len(current) + 1 + len(sentence) > max_chars:
                chunks.append(Chunk(current, episode.id))
                current = sentence
            else:
                current = f"{current} {sentence}".strip()
        if current:
            chunks.append(Chunk(current, episode.id))
    return chunks


def turn_pairs(chunks: Sequence[Chunk]) -> list[FactPair]:
    """The `turns` recipe: a recall request quoting the chunk's first words, answered by the whole chunk."""
    pairs = []
    for chunk in chunks:
        opening = " ".join(chunk.text.split()[:6])
        pairs.append(FactPair(RECALL_PROMPT.format(opening=opening), chunk.text, chunk.episode_id))
    return pairs


def sentences_of(chunk: Chunk) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(chunk.text) if s.strip()]


def question_chat(sentence: str, variant: int = 0) -> Chat:
    """The base's prompt for one question about `sentence`; `variant` rotates the worked examples (another
    question)."""
    shots = QUESTION_SHOTS[variant % len(QUESTION_SHOTS) :] + QUESTION_SHOTS[: variant % len(QUESTION_SHOTS)]
    chat: Chat = []
    for example, question in shots:
        chat += [ChatMessage.user(QUESTION_ASK + example).model_dump(), ChatMessage.assistant(question).model_dump()]
    return [*chat, ChatMessage.user(QUESTION_ASK + sentence).model_dump()]


def parse_question(text: str) -> str | None:
    """The question in the base's reply: its first line, if it is one."""
    line = re.sub(r"^\s*(?:\d+[.)]|Q\d*[:.]|Question:|[-*])\s*", "", text.strip().split("\n", 1)[0]).strip()
    return line if line.endswith("?") and 8 <= len(line) <= 200 else None


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def context_chat(chunk: str, question: str) -> Chat:
    """The base's prompt when it answers its own question: the chunk as what the user said, then the question."""
    note = f"Earlier, the user told you:\n{chunk}\nAnswer the user's question from it, briefly."
    return [ChatMessage.system(note).model_dump(), ChatMessage.user(question).model_dump()]


def self_study_pairs(chunks: Sequence[Chunk], generate: Generate, config: FactsConfig) -> list[FactPair]:
    """The `self-study` recipe: the base writes questions about each sentence, then the answers (see the module)."""
    asked_about = [
        (chunk, sentence)
        for chunk in chunks
        for sentence in sentences_of(chunk)
        if len(content_words(sentence)) >= config.min_words
    ]
    variants = range(config.questions_per_sentence)
    replies = generate([question_chat(s, v) for _, s in asked_about for v in variants], config.question_tokens)
    asked: list[tuple[Chunk, str, str]] = []
    for index, reply in enumerate(replies):
        chunk, sentence = asked_about[index // config.questions_per_sentence]
        question = parse_question(reply)
        if question is not None and all(question.lower() != q.lower() for c, _, q in asked[-3:] if c == chunk):
            asked.append((chunk, sentence, question))
    if config.answers == "source":
        answers = [sentence for _, sentence, _ in asked]
    else:
        answers = [a.strip() for a in generate([context_chat(c.text, q) for c, _, q in asked], config.answer_tokens)]
    return [FactPair(q, a, c.episode_id) for (c, _, q), a in zip(asked, answers, strict=True) if a]


def fact_pairs(episodes: Sequence[Trajectory], generate: Generate, config: FactsConfig) -> list[FactPair]:
    """The training pairs of `config.recipe` for what the user said in `episodes`."""
    chunks = chunks_of(episodes, config.chunk_chars)
    if config.recipe == "turns":
        return turn_pairs(chunks)
    return self_study_pairs(chunks, generate, config)


def split_pairs(pairs: Sequence[FactPair], fraction: float) -> tuple[list[FactPair], list[FactPair]]:
    """(trained, held out): the `fraction` of pairs whose question hashes lowest; none held out below 5 pairs."""
    if len(pairs) < 5 or fraction <= 0:
        return list(pairs), []
    ranked = sorted(pairs, key=lambda p: hashlib.sha256(p.question.encode()).hexdigest())
    held = {id(p) for p in ranked[: max(1, round(fraction * len(pairs)))]}
    return [p for p in pairs if id(p) not in held], [p for p in pairs if id(p) in held]


def answer_recall(reply: str, answer: str) -> bool:
    """Whether `reply` recalls `answer`: it holds at least half of the answer's content words (all of them, up to 2).

    The gate's test for held-out generated questions: exact agreement is too strict for facts, and BFCL's
    containment rule needs short acceptable strings that generated answers do not have."""
    wanted = content_words(answer)
    if not wanted:
        return True
    got = content_words(reply)
    return len(wanted & got) >= min(len(wanted), max(2, (len(wanted) + 1) // 2))
