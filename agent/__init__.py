"""The agent: settings, the shared base model, the LangGraph loop and its Python API, fakes, benchmarks, the CLI.

`Agent`, `RunResult` and `RunOptions` load lazily (they pull in langgraph and the tools), so `import agent` stays cheap.
"""

from typing import TYPE_CHECKING, Any

from agent.base import Base, BaseInfo, default_gguf_path, fingerprint_model, load_base
from agent.config import Settings

if TYPE_CHECKING:
    from agent.api import Agent, RunResult
    from agent.options import RunOptions

__all__ = [
    "Agent",
    "Base",
    "BaseInfo",
    "RunOptions",
    "RunResult",
    "Settings",
    "default_gguf_path",
    "fingerprint_model",
    "load_base",
]


def __getattr__(name: str) -> Any:
    if name in ("Agent", "RunResult"):
        from agent import api

        return getattr(api, name)
    if name == "RunOptions":
        from agent.options import RunOptions

        return RunOptions
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
