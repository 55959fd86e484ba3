"""Memory: episodes (trajectories), the short-term buffer they wait in, and consolidation into skill weights.

`ChromaBuffer`, `Consolidator` and `ConsolidationConfig` load lazily (chromadb, torch), so `import memory` is cheap.
"""

from typing import TYPE_CHECKING, Any

from memory.buffer import BufferStats, EpisodeBuffer, InMemoryBuffer
from memory.embed import Embedder, HashingEmbedder
from memory.trajectory import Outcome, SkillUse, Step, Trajectory

if TYPE_CHECKING:
    from memory.chroma import ChromaBuffer
    from memory.consolidate import ConsolidationConfig, ConsolidationReport, Consolidator

__all__ = [
    "BufferStats",
    "ChromaBuffer",
    "ConsolidationConfig",
    "ConsolidationReport",
    "Consolidator",
    "Embedder",
    "EpisodeBuffer",
    "HashingEmbedder",
    "InMemoryBuffer",
    "Outcome",
    "SkillUse",
    "Step",
    "Trajectory",
]

_LAZY = {
    "ChromaBuffer": "memory.chroma",
    "ConsolidationConfig": "memory.consolidate",
    "ConsolidationReport": "memory.consolidate",
    "Consolidator": "memory.consolidate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memory' has no attribute {name!r}")
