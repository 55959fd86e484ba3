"""What the commands open: the skill store, the episode buffer, the base's fingerprint, the routing embedder.

One home so that every command opens them the same way, and so that tests have one seam: replacing
`base_fingerprint` or `embedder` here (the real ones load the base model or MiniLM) changes every command using them.
"""

from __future__ import annotations

from typing import Any

from agent.config import Settings


def base_fingerprint(settings: Settings) -> str:
    """The loaded base's fingerprint (loading the base, ~0.3 s once converted): skills and packs are checked
    against it."""
    from agent.base import load_base

    return str(load_base(settings=settings).fingerprint)


def skill_store(settings: Settings, with_base: bool = False) -> Any:
    """The skill store; with the base's fingerprint when the command must check it (`base_fingerprint`)."""
    from skills.store import SkillStore

    return SkillStore(settings.skills_dir, base_fingerprint=base_fingerprint(settings) if with_base else None)


def episode_buffer(settings: Settings) -> Any:
    """The agent's episode buffer (chromadb under $HABITLOOP_HOME/buffer)."""
    from agent.api import default_buffer

    return default_buffer(settings)


def embedder() -> Any:
    """The embedder routing uses: the packaged all-MiniLM-L6-v2, the one the agent's buffer (and so the centroids
    consolidation stores) use."""
    from memory.embed import Embedder

    return Embedder()
