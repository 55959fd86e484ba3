"""Memory: episodes (trajectories), the short-term buffer they wait in, consolidation into skill weights, forgetting.

`ChromaBuffer`, `Consolidator`, `ConsolidationConfig` and `Forgetter` load lazily (chromadb, torch), so
`import memory` is cheap.
"""

from typing import TYPE_CHECKING, Any

from memory.buffer import (
    ALL_INSTANCES,
    BufferStats,
    EpisodeBuffer,
    EpisodeSummary,
    InMemoryBuffer,
    awaits_consolidation,
    plan_evictions,
)
from memory.embed import (
    Embedder,
    HashingEmbedder,
    TextEmbedder,
    default_model_path,
    register_embedder,
    routing_vector,
)
from memory.errors import EpisodeNotFoundError
from memory.trajectory import Outcome, SkillUse, Step, Trajectory

if TYPE_CHECKING:
    from memory.chroma import ChromaBuffer, ChromaEmbeddingFunction
    from memory.consolidate import ConsolidationReport, Consolidator
    from memory.forget import ForgetReport, Forgetter
    from memory.recipe import ConsolidationConfig

__all__ = [
    "ALL_INSTANCES",
    "BufferStats",
    "ChromaBuffer",
    "ChromaEmbeddingFunction",
    "ConsolidationConfig",
    "ConsolidationReport",
    "Consolidator",
    "Embedder",
    "EpisodeBuffer",
    "EpisodeNotFoundError",
    "EpisodeSummary",
    "ForgetReport",
    "Forgetter",
    "HashingEmbedder",
    "InMemoryBuffer",
    "Outcome",
    "SkillUse",
    "Step",
    "TextEmbedder",
    "Trajectory",
    "default_model_path",
    "awaits_consolidation",
    "plan_evictions",
    "register_embedder",
    "routing_vector",
]

_LAZY = {
    "ChromaBuffer": "memory.chroma",
    "ChromaEmbeddingFunction": "memory.chroma",
    "ConsolidationConfig": "memory.recipe",
    "ConsolidationReport": "memory.consolidate",
    "Consolidator": "memory.consolidate",
    "ForgetReport": "memory.forget",
    "Forgetter": "memory.forget",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memory' has no attribute {name!r}")
