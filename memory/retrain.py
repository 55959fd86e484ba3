"""Rebuilding a revision with the recipe its skill was made with: what forgetting trains a replacement with.

The recipe is the one stored with the skill's current revision (`evaluation.details["config"]`, else the default
`ConsolidationConfig`): its data rule (the episodes' replies, or with a facts part the pairs `memory.facts` makes from
what the user said), its replay of the base's own answers, its negatives (`memory.negatives`, paired among the
remaining episodes; a recipe stored before negatives existed has none), its steps rule, batch, learning rate and seed,
and the skill's LoRA shape, and the skills it was trained beneath (`compose_with`, `memory.composed`; one that is
gone from the store is left out). There is no gate: the rebuilt revision replaces one that must go, whatever it
scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memory.composed import companions, composed_replay
from memory.consolidate import crash_point
from memory.dataset import Dataset, example_from, system_prompts, unique_episodes
from memory.embed import TextEmbedder
from memory.facts import fact_pairs
from memory.negatives import build_relevance
from memory.offtask import OFF_TASK_TRAIN, looks_like_tool_call, off_task_chats, replay_count
from memory.recipe import ConsolidationConfig
from memory.trajectory import Trajectory
from skills.generation import generate
from skills.residency import Residency
from skills.store import SkillStore
from skills.train import ChatExample, TrainResult, train_lora


def recipe_retrainer(
    store: SkillStore,
    residency: Residency,
    tokenizer: Any,
    *,
    progress: bool = False,
    embedder: TextEmbedder | None = None,
    is_tool_call: Callable[[str], bool] = looks_like_tool_call,
) -> Any:
    """A `memory.forget.Retrainer` that trains with the recipe of the skill's current revision (see the module);
    `embedder` and `is_tool_call` pair and answer its negatives as `memory.consolidate.Consolidator` does (no
    embedder: question/function similarity by shared words, `HashingEmbedder`)."""

    def retrain(skill: str, parent: int | None, episodes: Sequence[Trajectory], work: Path) -> TrainResult:
        recipe = stored_recipe(store.revision(skill).evaluation.details.get("config"))
        examples = training_examples(recipe, episodes, residency, tokenizer, embedder, is_tool_call)
        config = recipe.train_config(len(examples), store.get(skill).lora)
        under = companions(residency, recipe, missing_ok=True)  # first: the first load makes the model a PeftModel
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
            under=under,
        )

    return retrain


def stored_recipe(details: Any) -> ConsolidationConfig:
    """The recipe a revision stored (`evaluation.details["config"]`), else the default. A recipe stored before
    negatives existed trained none: it is read with `negative_share` 0, so a rebuild makes what it made."""
    if not isinstance(details, dict):
        return ConsolidationConfig()
    return ConsolidationConfig.model_validate({"negative_share": 0.0} | details)


def training_examples(
    recipe: ConsolidationConfig,
    episodes: Sequence[Trajectory],
    residency: Residency,
    tokenizer: Any,
    embedder: TextEmbedder | None = None,
    is_tool_call: Callable[[str], bool] = looks_like_tool_call,
) -> list[ChatExample]:
    """What `recipe` trains on for `episodes`, every one of them (nothing held out), with the base's replay answers
    and the negatives paired among them."""
    chosen = unique_episodes(episodes, by_task=recipe.facts is not None)
    with residency.base_only() as model:
        if recipe.facts is None:
            own = [example_from(e) for e in chosen]
        else:
            ask = lambda chats, tokens: generate(model, tokenizer, chats, max_new_tokens=tokens)  # noqa: E731
            own = [p.example() for p in fact_pairs(chosen, ask, recipe.facts)]
        count = replay_count(len(own), floor=recipe.replay, share=recipe.replay_share)
        chats = off_task_chats(OFF_TASK_TRAIN[:count], system_prompts(chosen))
        answer = lambda asked: generate(model, tokenizer, asked, max_new_tokens=recipe.max_new_tokens)  # noqa: E731
        answers = answer(chats) if chats and not recipe.compose_with else []
        negatives = build_relevance(chosen, [], recipe, embedder, answer, is_tool_call).examples
    if recipe.compose_with:  # the replay is the companions' answer (memory.composed)
        chats, answers = composed_replay(recipe, residency, tokenizer, chats, missing_ok=True)
    return Dataset.build(chosen, chosen, [], chats, answers, trained=own, negatives=negatives).examples
