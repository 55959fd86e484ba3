"""What the commands open: the skill store, the episode buffer, the base's fingerprint, the routing embedder, tools.

One home so that every command opens them the same way, and so that tests have one seam: replacing
`base_fingerprint` or `embedder` here (the real ones load the base model or MiniLM) changes every command using them.
"""

from __future__ import annotations

from typing import Any

from agent.config import Settings
from skills.errors import UserError
from tools import Tool


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
    from agent.runtime import default_buffer

    return default_buffer(settings)


def embedder() -> Any:
    """The embedder routing uses: the packaged all-MiniLM-L6-v2, the one the agent's buffer (and so the centroids
    consolidation stores) use."""
    from memory.embed import Embedder

    return Embedder()


def load_tools(spec: str) -> list[Tool | Any]:
    """Import tools from `module:attr` (a tool, a function to wrap with @tool, a LangChain tool, or a list of them),
    or from `pack:NAME`, an installed skill pack's tools."""
    import importlib

    from tools import tool as make_tool

    module_name, _, attr = spec.partition(":")
    if module_name == "pack":  # `pack:NAME`: an installed pack's tools (only if installed with --trust-code)
        from skills.packs import load_pack_tools

        return [
            item if hasattr(item, "invoke") else make_tool(item) for item in load_pack_tools(attr, Settings().packs_dir)
        ]
    if not module_name or not attr:
        raise UserError(f"--tools {spec!r} is not 'module:attr'", hint="e.g. --tools mypkg.tools:TOOLS")
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise UserError(f"cannot import tools from {spec!r}: {error}") from error
    items = value if isinstance(value, list | tuple) else [value]
    # Tools and LangChain tools have `invoke`; a plain typed function is wrapped with @tool.
    return [item if hasattr(item, "invoke") else make_tool(item) for item in items]
