"""The BFCL recipe: the skill and category the experiments train, the consolidation that trains tool habits, and the
agent every BFCL experiment runs on (`habitloop demo`, the learning curve, the rank sweep, transfer, scripts/).

One home so that every experiment trains and measures the same way; the experiments themselves (their steps, reports
and plots) live in `agent/evals/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.api import Agent
from agent.base import load_base
from agent.config import Settings
from agent.evals.bfcl.data import BfclCase
from agent.evals.bfcl.practice import record_demonstrations
from memory.consolidate import ConsolidationConfig

SKILL = "tool-habits"
CATEGORY = "simple_python"
# Enough for the ground-truth call of any simple_python case; prose from the base is cut there.
MAX_NEW_TOKENS = 96


def bfcl_consolidation(**overrides: Any) -> ConsolidationConfig:
    """The recipe for BFCL tool habits: all-linear r=8 LoRA (the default spec), 2 epochs, batch 4, lr 1e-3; held-out
    replies long enough to hold a whole call."""
    recipe = {
        "kind": "tool_habit",
        "epochs": 2.0,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "min_episodes": 4,
        "max_steps": 400,
        "max_new_tokens": MAX_NEW_TOKENS,
        "holdout_fraction": 0.1,
        # Off trained 1.3x faster, but one batch of the longest `multiple` demonstrations kept 4.3 GB of activations;
        # on, the 282-demonstration consolidation peaked at 2.58 GB (docs/training-memory.md).
        "gradient_checkpointing": True,
        # A first revision is gated against the base, which calls no tool anywhere (rate 0). Measured on the real base
        # (tests/integration/test_relevance_real.py, 48 demonstrations): held-out mismatched calls 0.8 without
        # negatives, 0.2 with them. 0.5 refuses a first habit as leaky as one trained without negatives, not one with.
        "relevance_margin": 0.5,
    }
    return ConsolidationConfig(**(recipe | overrides))


def bfcl_agent(settings: Settings, base: Any = None, **recipe: Any) -> Agent:
    """An agent for BFCL cases on the shared base: no tools of its own (each case brings its functions), one step
    (the first call is what is judged), and the BFCL consolidation recipe with `recipe` overrides."""
    return Agent(  # the agent builds the store, the residency and the local model on `base` itself
        settings=settings,
        base=base if base is not None else load_base(settings=settings),
        tools=[],
        max_steps=1,
        max_new_tokens=MAX_NEW_TOKENS,
        consolidation=bfcl_consolidation(**recipe),
    )


def experiment_agent(settings: Settings, agent: Agent | None = None, recipe: dict[str, Any] | None = None) -> Agent:
    """The agent an experiment runs on (`agent`, e.g. one on the tiny base in tests, or a `bfcl_agent`), with the
    BFCL recipe and `recipe` overrides as its consolidation."""
    agent = agent or bfcl_agent(settings)
    agent.consolidation = bfcl_consolidation(**(recipe or {}))
    return agent


def fresh_demonstrations(agent: Agent, cases: Sequence[BfclCase], *, state_optional: bool = False) -> list[Any]:
    """Drop the buffer's waiting episodes, then record `cases` as demonstrations: each experiment step trains on
    exactly the demonstrations it names."""
    agent.buffer.discard([t.id for t in agent.buffer.list(consolidated=False, instance=agent.instance)])
    return record_demonstrations(agent, cases, state_optional=state_optional)
