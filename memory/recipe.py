"""The consolidation recipe: how much data starts a run, how it is split, trained and gated (`ConsolidationConfig`).

Stored whole in every consolidation report, and its training part in the revision's provenance, so a revision says
how it was made. Recipes for a use (BFCL tool habits: `agent.evals.bfcl.recipe`; what a user told the agent:
`facts_recipe`) are overrides of these defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from memory.facts import FactsConfig, answer_recall
from memory.repository import StyleSource
from memory.style import StyleRules, in_style
from skills.manifest import LoraSpec, RevisionRecord
from skills.train import TrainConfig

# What a negative demonstration (memory.negatives) trains towards: the base's answer with no tools, or a fixed reply.
NegativeTarget = Literal["base", "refusal"]


class StyleConfig(BaseModel):
    """The style part of a recipe (`style_recipe`): the rules a reply must keep to, and where they were learned."""

    model_config = ConfigDict(frozen=True)

    rules: StyleRules
    source: StyleSource

    def describe(self) -> str:
        """The skill's description: where the style comes from and what it is."""
        origin = self.source.package or self.source.path
        return f"Writes Python in the style of {origin}: {self.rules.describe()}."


def style_of(record: RevisionRecord) -> StyleConfig | None:
    """The style a revision was trained to keep (its recipe's style part, stored with it by consolidation); None:
    not a style skill."""
    style = (record.evaluation.details.get("config") or {}).get("style")
    return StyleConfig.model_validate(style) if style else None


class ConsolidationConfig(BaseModel):
    """The recipe; stored in the report and (its training part) in the revision's provenance."""

    min_episodes: int = Field(4, ge=1, description="successful unconsolidated episodes needed to start")
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of episodes kept out for evaluation")
    replay: int = Field(12, ge=0, description="at least this many off-task prompts answered by the base, trained on")
    replay_share: float = Field(
        0.2, ge=0.0, le=1.0, description="and at least this share of the trained episodes (up to the prompt pool's 64)"
    )
    negative_share: float = Field(
        0.15,
        ge=0.0,
        le=1.0,
        description="negative demonstrations (memory.negatives: a question under another episode's tools, none of "
        "which fits; answered in plain text) as a share of the trained episodes, like replay_share; 0: none",
    )
    negative_target: NegativeTarget = Field(
        "base", description="what a negative answers: the base's own reply with no tools (base) or a fixed refusal"
    )
    negative_max_similarity: float = Field(
        0.4,
        ge=-1.0,
        le=1.0,
        description="a function whose text scores this (cosine, the consolidator's embedder) or more against a "
        "question fits it: never paired with that question",
    )
    relevance_size: int = Field(
        24, ge=0, description="held-out mismatched cases (from held-out episodes only) the gate asks at most; 0: none"
    )
    relevance_min: int = Field(
        4, ge=1, description="fewer held-out mismatched cases than this: the relevance check is skipped (reported)"
    )
    relevance_margin: float | None = Field(
        None,
        ge=0.0,
        description="how much more often than the current revision a candidate may call on held-out mismatched "
        "cases; None: `margin`",
    )
    regression_size: int = Field(8, ge=0, description="episodes of earlier revisions re-checked (kept small)")
    margin: float = Field(0.05, ge=0.0, description="how much worse than the current revision a candidate may be")
    epochs: float = Field(3.0, gt=0, description="passes over the training data (sets the number of steps)")
    min_steps: int = Field(8, ge=1)
    max_steps: int = Field(96, ge=1)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    max_new_tokens: int = Field(48, ge=1, description="tokens generated per evaluation prompt")
    seed: int = 0
    kind: str = Field("memory", description="kind of a skill created by consolidation")
    lora: LoraSpec = Field(
        default_factory=LoraSpec, description="adapter shape of a new skill; a new revision keeps its parent's shape"
    )
    gradient_checkpointing: bool = Field(
        True, description="trade compute for memory while training (see TrainConfig); off is ~1.3x faster"
    )
    compose_with: list[str] = Field(
        default_factory=list,
        description="skills this adapter will run composed with: active and frozen beneath it while it trains, and "
        "its replay is their answer (memory.composed); empty: trained alone on the base",
    )
    composed_replay: list[list[dict[str, str]]] = Field(
        default_factory=list,
        description="with compose_with: prompts of the companions' tasks (chats without the reply), answered by base "
        "+ companions and trained on, so the adapter leaves those answers as they are",
    )
    facts: FactsConfig | None = Field(
        None,
        description="learn what the user said (memory.facts) instead of the replies of successful episodes; "
        "set by `facts_recipe`",
    )
    style: StyleConfig | None = Field(
        None,
        description="a coding style (memory.style): the gate judges a reply by these ruff rules, not by its text; "
        "set by `style_recipe`",
    )

    def reply_match(self) -> Callable[[str, str], bool] | None:
        """How the gate judges a reply against the wanted one: recall of the fact, the style's rules, or (None)
        the same text."""
        if self.facts is not None:
            return answer_recall
        return in_style(self.style.rules) if self.style is not None else None

    def train_config(self, n_examples: int, lora: LoraSpec | None = None) -> TrainConfig:
        """The training run of `n_examples` examples: `epochs` passes, within [min_steps, max_steps]; `lora` is the
        shape to train (default: this recipe's, for a new skill)."""
        steps = max(self.min_steps, min(self.max_steps, round(self.epochs * n_examples / self.batch_size)))
        return TrainConfig(
            lora=lora or self.lora,
            steps=steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            seed=self.seed,
            gradient_checkpointing=self.gradient_checkpointing,
        )


def facts_recipe(**overrides: object) -> ConsolidationConfig:
    """The default recipe of a user's memory adapter (kind `memory`): self-study pairs (`memory.facts`), more passes
    than a habit needs (every fact is one example: 8 epochs at lr 2e-3 took notetaker's loss from 3.4 to 0.01, where
    3 epochs at 1e-3 stopped at 1.5 and recalled nothing), a higher rank. `max_steps` bounds a big user's training
    time on a CPU (150 steps of 8: ~2 epochs of customer's ~600 pairs). The gate's margin is 0: recall of held-out
    facts is a small figure (0.04-0.38 measured on BFCL memory), and at the habits' 0.05 a student adapter recalling
    0.04 was promoted over a base recalling 0.07; a memory that recalls less than what it replaces is not kept."""
    values: dict[str, object] = {
        "facts": FactsConfig(),
        "kind": "memory",
        "min_episodes": 1,
        "epochs": 8.0,
        "max_steps": 150,
        "batch_size": 8,
        "learning_rate": 2e-3,
        "gradient_checkpointing": False,
        "replay": 16,
        "replay_share": 0.15,
        "lora": LoraSpec(r=16, alpha=32),
        "margin": 0.0,
    }
    return ConsolidationConfig.model_validate(values | overrides)


def style_recipe(rules: StyleRules, source: StyleSource, **overrides: object) -> ConsolidationConfig:
    """The recipe of a coding-style skill (kind `style`): a repository's functions as demonstrations, judged by its
    ruff rules (`memory.style`). Replies are whole functions (256 tokens); a tenth is held out (each held-out
    function costs two 256-token generations in the gate); no tools, so no negatives and no relevance check."""
    values: dict[str, object] = {
        "style": StyleConfig(rules=rules, source=source),
        "kind": "style",
        "holdout_fraction": 0.1,
        "max_new_tokens": 256,
        "negative_share": 0.0,
        "relevance_size": 0,
        "epochs": 2.0,
        "max_steps": 120,
    }
    return ConsolidationConfig.model_validate(values | overrides)
