"""What a consolidation trains on and is checked against, built from the buffer's episodes.

Episodes are grouped by the skill they should go into (`group_episodes`), deduplicated by their training data, split
into trained and held-out episodes (`split_holdout`, deterministic so a rerun holds out the same ones), and mixed with
the base's own answers to off-task prompts (self-distillation replay, see `memory.offtask`). The data hash of the
examples is what tells a rerun that this exact attempt was already made.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from memory.trajectory import Trajectory
from skills.manifest import validate_skill_name
from skills.messages import ROLES, ChatMessage
from skills.train import ChatExample, data_hash

Chat = list[dict[str, str]]

_STOP = set(
    "a an the of to in on for and or is are was be what how who which with by at from it this that please "
    "use tool me my you your can could would i do does".split()
)


def example_from(episode: Trajectory) -> ChatExample:
    """The episode as a training conversation: its system prompt, then this run's messages (earlier runs dropped)."""
    head = [ChatMessage.system(episode.system_prompt)] if episode.system_prompt else []
    run = [ChatMessage.from_record(m) for m in episode.run_messages if m.get("role") in ROLES]
    return ChatExample(messages=(*head, *run), source_id=episode.id)


def first_reply(episode: Trajectory) -> str | None:
    """The episode's first assistant message: what a model is checked to reproduce, given `task_prompt`."""
    for message in episode.run_messages:
        if message.get("role") == "assistant":
            return str(message.get("content", ""))
    return None


def task_prompt(episode: Trajectory) -> Chat:
    """The chat the episode started from: its system prompt (if any) and its task."""
    head = [{"role": "system", "content": episode.system_prompt}] if episode.system_prompt else []
    return [*head, {"role": "user", "content": episode.task}]


def unique_episodes(episodes: Sequence[Trajectory], *, by_task: bool = False) -> list[Trajectory]:
    """The first of each set of episodes that would make the same training example (`by_task`: that say the same,
    for the facts recipe, which learns only what the user said), in order."""
    unique: dict[str, Trajectory] = {}
    for episode in episodes:
        unique.setdefault(episode.task if by_task else data_hash([example_from(episode)]), episode)
    return list(unique.values())


def split_holdout(episodes: Sequence[Trajectory], fraction: float) -> tuple[list[Trajectory], list[Trajectory]]:
    """(train, held out): the `fraction` of episodes whose id hashes lowest, at least one when there are 3 or more.

    Deterministic, so a rerun on the same episodes holds out the same ones; by count rather than by a hash
    threshold, so a small group never ends up with no held-out episode by chance.
    """
    if len(episodes) < 3 or fraction <= 0:
        return list(episodes), list(episodes)  # too few to split: train and evaluate on all (the report says so)
    ranked = sorted(episodes, key=lambda e: hashlib.sha256(e.id.encode()).hexdigest())
    count = max(1, round(fraction * len(episodes)))
    held = {e.id for e in ranked[:count]}
    return [e for e in episodes if e.id not in held], [e for e in episodes if e.id in held]


def system_prompts(episodes: Sequence[Trajectory]) -> list[str | None]:
    """The episodes' system prompts, most used first (the off-task prompts take them in turn)."""
    return [prompt for prompt, _ in Counter(e.system_prompt for e in episodes).most_common()]


def derive_name(episodes: Sequence[Trajectory], taken: set[str]) -> tuple[str, str]:
    """A slug and a description for a skill created from `episodes`, from the words their tasks share."""
    words = Counter(word for e in episodes for word in set(re.findall(r"[a-z]+", e.task.lower())) if word not in _STOP)
    top = [word for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0]))[:2]] or ["learned"]
    base = validate_skill_name("-".join(top)[:50].strip("-") or "learned")
    name, index = base, 2
    while name in taken:
        name, index = f"{base}-{index}", index + 1
    samples = "; ".join(repr(e.task[:60]) for e in episodes[:3])
    return name, f"Learned from {len(episodes)} successful episodes, such as {samples}."


def group_episodes(episodes: Sequence[Trajectory], skill: str | None) -> dict[str | None, list[Trajectory]]:
    """Episodes by the skill they should consolidate into: `skill` if given (its own episodes and skill-less ones),
    else the first skill each ran with; None collects episodes that ran with no skill (a new skill is made)."""
    groups: dict[str | None, list[Trajectory]] = {}
    for episode in episodes:
        used = episode.skills[0].name if episode.skills else None
        if skill is not None:
            if used in (skill, None):
                groups.setdefault(skill, []).append(episode)
        else:
            groups.setdefault(used, []).append(episode)
    return groups


@dataclass(frozen=True)
class Dataset:
    """One consolidation's data: the episodes chosen (deduplicated), their split, the replay chats and the examples
    trained on (trained episodes, then replay, then negatives: `memory.negatives`), with the examples' data hash."""

    chosen: list[Trajectory]
    train: list[Trajectory]
    holdout: list[Trajectory]
    replay_chats: list[Chat]
    examples: list[ChatExample]
    digest: str

    @classmethod
    def build(
        cls,
        chosen: list[Trajectory],
        train: list[Trajectory],
        holdout: list[Trajectory],
        replay_chats: list[Chat],
        replay_answers: list[str],
        *,
        trained: Sequence[ChatExample] | None = None,
        negatives: Sequence[ChatExample] = (),
    ) -> Dataset:
        """The examples: each trained episode (or `trained`, examples made from them, e.g. by the facts recipe), then
        each replay chat ending in the base's answer to it, then the `negatives`."""
        own = [example_from(e) for e in train] if trained is None else list(trained)
        examples = own + [
            ChatExample(
                messages=(*(ChatMessage.model_validate(m) for m in chat), ChatMessage(role="assistant", content=a)),
                source_id=f"replay:{i}",
            )
            for i, (chat, a) in enumerate(zip(replay_chats, replay_answers, strict=True))
        ]
        examples += negatives
        return cls(chosen, train, holdout, replay_chats, examples, data_hash(examples))
