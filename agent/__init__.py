"""The agent: settings, the shared base model, the LangGraph loop and its Python API, fakes, benchmarks, the CLI.

`Agent` and `RunResult` load lazily (they pull in langgraph and the tools), so `import agent` stays cheap.
"""

from typing import TYPE_CHECKING, Any

from agent.base import Base, BaseInfo, default_gguf_path, fingerprint_model, load_base
from agent.config import Settings

if TYPE_CHECKING:
    from agent.api import Agent, RunResult

__all__ = ["Agent", "Base", "BaseInfo", "RunResult", "Settings", "default_gguf_path", "fingerprint_model", "load_base"]


def __getattr__(name: str) -> Any:
    if name in ("Agent", "RunResult"):
        from agent import api

        return getattr(api, name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
