"""Rebuilding a revision with the recipe its skill was made with: what forgetting trains a replacement with.

The recipe is the one stored with the skill's current revision (`evaluation.details["config"]`, else the default
`ConsolidationConfig`): its data rule (the episodes' replies, or with a facts part the pairs `memory.facts` makes from
what the user said), its replay of the base's own answers, its steps rule, batch, learning rate and seed, and the
skill's LoRA shape. There is no gate: the rebuilt revision replaces one that must go, whatever it scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memory.consolidate import crash_point
from memory.dataset import Dataset, example_from, system_prompts, unique_episodes
from memory.facts import fact_pairs
from memory.offtask import OFF_TASK_TRAIN, off_task_chats, replay_count
from memory.recipe import ConsolidationConfig
from memory.trajectory import Trajectory
from skills.generation import generate
from skills.residency import Residency
from skills.store import SkillStore
from skills.train import ChatExample, TrainResult, train_lora


def recipe_retrainer(store: SkillStore, residency: Residency, tokenizer: Any, *, progress: bool = False) -> Any:
    """A `memory.forget.Retrainer` that trains with the recipe of the skill's current revision (see the module)."""

    def retrain(skill: str, parent: int | None, episodes: Sequence[Trajectory], work: Path) -> TrainResult:
        details = store.revision(skill).evaluation.details.get("config")
        recipe = ConsolidationConfig.model_validate(details) if isinstance(details, dict) else ConsolidationConfig()
        examples = training_examples(recipe, episodes, residency, tokenizer)
        config = recipe.train_config(len(examples), store.get(skill).lora)
        return train_lora(
            residency.model,
            tokenizer,
            examples,
            work / "candidate",
            config=config,
            init_from=None if parent is None else store.revision_dir(skill, parent),
            episode_ids=[e.id for e in episodes],
            progress=progress,
            on_step=lambda step, loss: crash_point("forget:training") if step >= 2 else None,
        )

    return retrain


def training_examples(
    recipe: ConsolidationConfig, episodes: Sequence[Trajectory], residency: Residency, tokenizer: Any
) -> list[ChatExample]:
    """What `recipe` trains on for `episodes`, every one of them (nothing held out), with the base's replay answers."""
    chosen = unique_episodes(episodes, by_task=recipe.facts is not None)
    with residency.base_only() as model:
        if recipe.facts is None:
            own = [example_from(e) for e in chosen]
        else:
            ask = lambda chats, tokens: generate(model, tokenizer, chats, max_new_tokens=tokens)  # noqa: E731
            own = [p.example() for p in fact_pairs(chosen, ask, recipe.facts)]
        count = replay_count(len(own), floor=recipe.replay, share=recipe.replay_share)
        chats = off_task_chats(OFF_TASK_TRAIN[:count], system_prompts(chosen))
        answers = generate(model, tokenizer, chats, max_new_tokens=recipe.max_new_tokens) if chats else []
    return Dataset.build(chosen, chosen, [], chats, answers, trained=own).examples
