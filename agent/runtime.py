"""The composition root of the local model: base -> skill store -> residency -> `LocalChatModel`, wired in one place.

Every caller that runs skills in this process (the `Agent`, `habitloop serve`, the benchmarks, the vLLM backend's
composition builder) gets its parts from `local_runtime`, so the store always carries the base's fingerprint and the
residency always has the configured hot/warm bounds. Loading the base is the expensive step: pass one already loaded
to share it. The agent's other persistent parts are opened here too: the episode buffer (`default_buffer`) and the
LangGraph checkpointer (`sqlite_checkpointer`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.backends.local import LocalChatModel
from agent.base import Base, load_base
from agent.config import Settings
from memory.buffer import EpisodeBuffer
from skills.instances import LayeredStore
from skills.residency import Residency
from skills.store import SkillStore


@dataclass(frozen=True)
class LocalRuntime:
    """The wired parts. `store` is the shared store (what a server lists and an operator edits); the residency may
    read through a wider view of it (personal skills too, see `local_runtime`)."""

    base: Base
    store: SkillStore
    residency: Residency
    model: LocalChatModel


def local_runtime(
    settings: Settings | None = None,
    *,
    base: Base | None = None,
    store: SkillStore | None = None,
    instances_dir: Path | None = None,
    max_hot: int | None = None,
    max_warm: int | None = None,
) -> LocalRuntime:
    """The local model over `settings`' base and store, or over the `base` and `store` given.

    `instances_dir`: the residency also loads personal skills (`alice/x` names) from there, through a
    `LayeredStore` over `store`. `max_hot` / `max_warm` default to the settings' (`HABITLOOP_MAX_HOT` / `_WARM`).
    """
    settings = settings or Settings()
    base = base or load_base(settings=settings)
    store = store or SkillStore(settings.skills_dir, base_fingerprint=base.fingerprint)
    view = store if instances_dir is None else LayeredStore(store, instances_dir)
    slots = None
    if settings.slots:  # before the residency wraps the base into a PeftModel: slots hook the plain base's layers
        from skills.runtime import AdapterSlots

        slots = AdapterSlots(base.model, capacity=settings.slots, r_max=settings.slot_rank)
    residency = Residency(
        base.model,
        view,  # a SkillReader: the store, or the store with the personal skills layered over it
        max_hot=settings.max_hot if max_hot is None else max_hot,
        max_warm=settings.max_warm if max_warm is None else max_warm,
        slots=slots,
    )
    return LocalRuntime(base=base, store=store, residency=residency, model=LocalChatModel(base, residency))


def default_buffer(settings: Settings) -> EpisodeBuffer:
    """The chroma buffer: embedded under `$HABITLOOP_HOME/buffer`, or the server at `HABITLOOP_CHROMA_URL`."""
    from memory.chroma import ChromaBuffer
    from memory.embed import Embedder

    if settings.chroma_url:
        return ChromaBuffer(url=settings.chroma_url, embedder=Embedder())
    return ChromaBuffer(settings.buffer_dir, embedder=Embedder())


def sqlite_checkpointer(path: Path) -> Any:
    """LangGraph's SQLite saver on `path` (created if missing): threads survive the process."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteSaver(sqlite3.connect(str(path), check_same_thread=False))
