"""Knowing when not to call: a question of one episode under the tools of another that cannot answer it.

The off-task check (`memory.offtask`) asks generic prompts ("What is the capital of France?"); a tool habit can pass
it and still call an offered function on most task-like questions that no offered function fits (BFCL's
`irrelevance` category). Those are wrong actions, not format slips, so consolidation trains on such mismatches
(negative demonstrations, answered in plain text) and the gate measures them on held-out ones.

A mismatch pairs the task of one episode (the question) with the system prompt of another (its tools), when none of
those tools fits the question:
- no function name in common with the functions the question's own episode was offered;
- no required parameter name in common with them either;
- the question's embedding scores below `negative_max_similarity` (cosine) against every offered function's text
  (its name and description). With all-MiniLM-L6-v2 on 150 BFCL simple_python cases, a question and the function it
  calls scored 0.45-0.84 (5th-95th percentile) and a question and another case's function -0.03-0.34, so the
  default 0.4 drops 98 % of fitting functions on this rule alone and keeps 96 % of the others.

The chat trained on is the question under the other episode's stored system prompt: the tools rendered exactly as
the agent rendered them for that episode (`Trajectory.system_prompt`; memory reads the schemas back from it, one JSON
object per line, as `agent.prompt.system_prompt` writes them). Pairing is seeded (`config.seed`), so a rerun on the
same episodes builds the same mismatches and the data hash tells it the attempt was already made.

The target (`negative_target`): `base` (default), the base's own answer to the question with no tools offered,
generated like the replay answers; `refusal`, the fixed `REFUSAL`. The base's answer is the default for the reason
replay is self-distillation: it is text the base already writes, so the adapter learns only "no call here" and keeps
the base's voice, where a fixed sentence is one more habit for a 135M model to learn and to leak, into cases where a
tool does fit. A base answer that is itself a call (by the agent's parser) or empty is replaced by `REFUSAL`.
`refusal` costs no generation and says plainly why nothing was called.

Train and gate pools are disjoint: negatives are built from the trained episodes only, the gate's mismatches from the
held-out episodes only, so the relevance check measures restraint on questions and tool lists never trained on. The
facts recipe (`consolidate_facts`) has no tools and builds neither.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from memory.embed import HashingEmbedder, TextEmbedder
from memory.recipe import ConsolidationConfig, NegativeTarget
from memory.trajectory import Trajectory
from skills.messages import ChatMessage
from skills.train import ChatExample

Chat = list[dict[str, str]]

REFUSAL = "None of the available tools can do this, so I will not call any of them."
# Partners tried per question before it is given up: BFCL episodes each bring other tools, so a fit is rare and the
# first few partners almost always do; the bound keeps pairing linear in the episodes.
_TRIES = 32


@dataclass(frozen=True)
class OfferedFunction:
    """One function a system prompt offers: what decides whether it fits a question."""

    name: str
    description: str = ""
    required: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        """The name as compared: case and "." vs "_" ignored (BFCL's dotted names are offered with underscores)."""
        return self.name.replace(".", "_").lower()

    @property
    def text(self) -> str:
        """What the question's embedding is compared with: the name in words, then the description."""
        words = self.name.replace("_", " ").replace(".", " ")
        return f"{words}: {self.description}" if self.description else words


def offered_functions(system_prompt: str | None) -> list[OfferedFunction]:
    """The functions a system prompt lists: each line that is a JSON object with a string `name` (an OpenAI-style
    `{"function": {...}}` wrapper unwrapped), as `agent.prompt.system_prompt` writes them. Other lines are prose."""
    found = []
    for line in (system_prompt or "").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("function"), dict):
            value = value["function"]
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            continue
        parameters = value.get("parameters")
        required = parameters.get("required", []) if isinstance(parameters, dict) else []
        found.append(
            OfferedFunction(
                name=value["name"],
                description=str(value.get("description") or ""),
                required=frozenset(str(p).lower() for p in required if isinstance(p, str)),
            )
        )
    return found


@dataclass(frozen=True)
class Mismatch:
    """The task of `question` under the tools of `tools_from`, none of which fits it."""

    question: Trajectory
    tools_from: Trajectory

    @property
    def chat(self) -> Chat:
        """What the model sees: the other episode's system prompt (its tools), then the question."""
        return [
            {"role": "system", "content": self.tools_from.system_prompt or ""},
            {"role": "user", "content": self.question.task},
        ]

    @property
    def bare_chat(self) -> Chat:
        """The question with no tools offered: what the base answers for the `base` target."""
        return [{"role": "user", "content": self.question.task}]


class _Similarity:
    """Cosine similarity of questions and function texts, each text embedded once."""

    def __init__(self, embedder: TextEmbedder) -> None:
        self.embedder = embedder
        self._vectors: dict[str, list[float]] = {}

    def prepare(self, texts: Sequence[str]) -> None:
        new = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if new:
            self._vectors.update(zip(new, self.embedder.embed(new), strict=True))

    def __call__(self, a: str, b: str) -> float:
        return sum(x * y for x, y in zip(self._vectors[a], self._vectors[b], strict=True))


def mismatches(
    episodes: Sequence[Trajectory],
    count: int,
    *,
    embedder: TextEmbedder,
    max_similarity: float,
    seed: int = 0,
) -> list[Mismatch]:
    """Up to `count` mismatches among `episodes`, each question used once, questions and partners in a seeded order.

    Only episodes whose system prompt offers functions can lend their tools; any episode can lend its question."""
    if count <= 0:
        return []
    offers = {e.id: offered_functions(e.system_prompt) for e in episodes}
    lenders = [e for e in episodes if offers[e.id]]
    if not lenders:
        return []
    rng = random.Random(f"habitloop-negatives:{seed}")
    questions = list(episodes)
    rng.shuffle(questions)
    similarity = _Similarity(embedder)
    similarity.prepare([e.task for e in questions] + [f.text for e in lenders for f in offers[e.id]])
    found: list[Mismatch] = []
    for question in questions:
        if len(found) >= count:
            break
        own = offers[question.id]
        names = {f.key for f in own}
        required = set().union(*(f.required for f in own))
        for lender in rng.sample(lenders, min(_TRIES, len(lenders))):
            offered = offers[lender.id]
            if lender.id == question.id or lender.system_prompt == question.system_prompt:
                continue
            if names & {f.key for f in offered} or required & set().union(*(f.required for f in offered)):
                continue
            if max(similarity(question.task, f.text) for f in offered) >= max_similarity:
                continue
            found.append(Mismatch(question, lender))
            break
    return found


def negative_count(n_train: int, share: float) -> int:
    """Negatives to train on: `share` of the trained episodes, rounded up (0 when the share is 0)."""
    return math.ceil(share * n_train) if share > 0 else 0


def negative_answers(
    cases: Sequence[Mismatch],
    target: NegativeTarget,
    ask: Callable[[list[Chat]], list[str]],
    is_tool_call: Callable[[str], bool],
) -> list[str]:
    """The reply each negative trains towards: the base's answer to the bare question (`ask`, adapters off), or
    `REFUSAL`; a base answer that calls a tool or says nothing becomes `REFUSAL` too."""
    if not cases:
        return []
    if target == "refusal":
        return [REFUSAL] * len(cases)
    answers = ask([case.bare_chat for case in cases])
    return [a if a.strip() and not is_tool_call(a) else REFUSAL for a in answers]


@dataclass(frozen=True)
class Relevance:
    """One consolidation's negatives (examples to train on) and the held-out mismatches its gate asks, with notes
    for the report (why something asked for could not be built)."""

    examples: list[ChatExample] = field(default_factory=list)
    gate: list[Mismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def gate_chats(self) -> list[Chat]:
        return [case.chat for case in self.gate]

    def report_fields(self) -> dict[str, Any]:
        """What `ConsolidationReport` says about them: `n_negatives`, `n_mismatched`, `notes`."""
        return {"n_negatives": len(self.examples), "n_mismatched": len(self.gate), "notes": list(self.notes)}


def build_relevance(
    train: Sequence[Trajectory],
    holdout: Sequence[Trajectory],
    config: ConsolidationConfig,
    embedder: TextEmbedder | None,
    ask: Callable[[list[Chat]], list[str]],
    is_tool_call: Callable[[str], bool],
) -> Relevance:
    """The negatives (from `train` only, `negative_share` of it) and the gate's mismatches (from `holdout` only, at
    most `relevance_size`; none below `relevance_min`, with a note). Nothing for the facts recipe."""
    if config.facts is not None:
        return Relevance()
    if not any(offered_functions(e.system_prompt) for e in [*train, *holdout]):
        return Relevance(notes=["no episode offers tools: no negatives, no relevance check"])
    notes: list[str] = []
    if embedder is None:
        embedder = HashingEmbedder()
        notes.append("no embedder: question/function similarity by shared words (HashingEmbedder)")
    build = partial(mismatches, embedder=embedder, max_similarity=config.negative_max_similarity, seed=config.seed)
    wanted = negative_count(len(train), config.negative_share)
    negatives = build(train, wanted)
    if len(negatives) < wanted:
        notes.append(f"negatives: {len(negatives)} of {wanted} could be built from {len(train)} trained episodes")
    answers = negative_answers(negatives, config.negative_target, ask, is_tool_call)
    examples = [
        ChatExample(
            messages=(*(ChatMessage.model_validate(m) for m in case.chat), ChatMessage.assistant(answer)),
            source_id=f"negative:{case.question.id}:{case.tools_from.id}",
        )
        for case, answer in zip(negatives, answers, strict=True)
    ]
    gate: list[Mismatch] = []
    if config.relevance_size > 0:
        trained = {e.id for e in train}
        if any(e.id in trained for e in holdout):
            notes.append("relevance check skipped: too few episodes to hold any out of training")
        else:
            gate = build(holdout, config.relevance_size)
            if len(gate) < config.relevance_min:
                notes.append(
                    f"relevance check skipped: {len(gate)} held-out mismatched cases could be built from "
                    f"{len(holdout)} held-out episodes, fewer than relevance_min={config.relevance_min}"
                )
                gate = []
    return Relevance(examples, gate, notes)
