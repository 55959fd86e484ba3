"""Training an adapter inside the composition it will run in (the recipe's `compose_with` skills).

A user's memory adapter runs composed with shared skills (`tool-habits+memory`: their updates add up). Trained alone
on the base, nothing in its data says what it must leave alone where those skills act: measured on BFCL, such a
memory adapter took `tool-habits` from 45 % to 25 % on simple_python. With `compose_with`, the companions are loaded
and kept active and frozen beneath the candidate while it trains (`skills.train.train_lora(under=...)`), and the
replay it learns from is answered by base + companions instead of the base alone: the off-task prompts, and the
recipe's `composed_replay` prompts, tasks of the companions (a tool habit's tool questions). So the adapter learns
what to add to them: its own examples, and nothing where the companions already answer.

The gate still scores the candidate alone, as every skill is scored; the trained revision's provenance names the
companions' revisions (`training["under"]`), and a forget rebuilds with the same recipe, hence the same companions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from memory.dataset import Chat
from memory.recipe import ConsolidationConfig
from skills.errors import SkillNotFoundError
from skills.generation import generate
from skills.residency import Residency

log = logging.getLogger("habitloop.consolidate")


def companions(residency: Residency, recipe: ConsolidationConfig, *, missing_ok: bool = False) -> list[str]:
    """The recipe's `compose_with` skills loaded (hot) in the residency's model: their adapter names, for
    `train_lora(under=...)`; empty when the recipe trains alone. A companion that is not in the store raises
    `SkillNotFoundError`, unless `missing_ok` (a forget's rebuild: forgetting must not wait for a skill that is
    gone; the rebuilt revision then trains without it, and its provenance says so)."""
    names = []
    for skill in recipe.compose_with:
        try:
            names.append(residency.load(skill))
        except SkillNotFoundError:
            if not missing_ok:
                raise
            log.warning("companion skill %r is gone: rebuilding without it", skill)
    return names


def composed_replay(
    recipe: ConsolidationConfig,
    residency: Residency,
    tokenizer: Any,
    replay_chats: Sequence[Chat],
    *,
    missing_ok: bool = False,
) -> tuple[list[Chat], list[str]]:
    """The replay of a recipe with companions: the off-task `replay_chats`, then its `composed_replay` prompts, all
    answered by base + companions (activated together; the base alone when none is left)."""
    chats = [*replay_chats, *recipe.composed_replay]
    if not chats:
        return [], []
    names = companions(residency, recipe, missing_ok=missing_ok)
    if not names:
        with residency.base_only() as model:
            return chats, generate(model, tokenizer, chats, max_new_tokens=recipe.max_new_tokens)
    residency.activate_adapter(names)
    return chats, generate(residency.model, tokenizer, chats, max_new_tokens=recipe.max_new_tokens)
