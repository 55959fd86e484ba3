"""Routing latency with a large registry: `habitloop bench` calls `measure_routing`; `python -m agent.bench.route`
runs it alone and prints the figures as JSON.

What a routed run pays is one task embedding plus one matrix-vector product and a top-k over every skill. The
benchmark builds the `RoutingIndex` from synthetic unit vectors (half the skills with a centroid, as consolidated
skills have) rather than writing thousands of adapters: the router never reads adapters. The embedding is the real
all-MiniLM-L6-v2 and is reported separately. A second figure times the index's rebuild after one write to a store of
that many skills (manifests and revision records only): the cost of the first route after a consolidation.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.bench.figures import Figure, figure
from agent.router import Router, RoutingIndex
from memory.embed import HashingEmbedder, TextEmbedder
from skills.errors import OperatorError
from skills.files import atomic_write_json
from skills.manifest import HistoryEvent, LoraSpec, RevisionRecord, RoutingVector, SkillManifest
from skills.store import MANIFEST, REVISION, SkillStore

TASKS = (
    "What is 17*23?",
    "Save a note saying 'call mom' to notes.txt.",
    "Translate 'good morning' into German.",
    "Summarize this paragraph in one sentence.",
    "How warm is it in Oslo today?",
)


def _ms(samples_s: list[float], note: str) -> Figure:
    return figure(samples_s, "ms", note)


def measure_routing(
    embedder: TextEmbedder, *, skills: int = 10_000, repeats: int = 21, warmup: int = 3, seed: int = 0
) -> dict[str, Any]:
    """`routing_latency_<skills>_ms` (embed + score + top-k, as `Router.decide` runs it), `routing_embed_ms` and
    `routing_score_<skills>_ms`, each the median of `repeats` calls after `warmup` calls."""
    dim = embedder.dimension
    rng = np.random.default_rng(seed)
    descriptions = rng.standard_normal((skills, dim), dtype=np.float32)  # (skills, dim), normalized by the index
    centroids = [rng.standard_normal(dim, dtype=np.float32) if i % 2 == 0 else None for i in range(skills)]
    names = [f"skill-{i:05d}" for i in range(skills)]
    index = RoutingIndex.from_vectors(embedder, names, [1] * skills, descriptions, centroids)
    router = Router(None, embedder, index=index)
    for i in range(warmup):
        router.decide(TASKS[i % len(TASKS)])
    total: list[float] = []
    embed: list[float] = []
    score: list[float] = []
    for i in range(repeats):
        started = time.perf_counter()
        decision = router.decide(TASKS[i % len(TASKS)])
        total.append(time.perf_counter() - started)
        embed.append(decision.embed_ms / 1000)
        score.append(decision.score_ms / 1000)
    return {
        f"routing_latency_{skills}_ms": _ms(
            total, f"{skills} skills ({skills // 2} with centroids), {embedder.name}: embed + score + top-k (goal 100)"
        ),
        "routing_embed_ms": _ms(embed, f"one task through {embedder.name}"),
        f"routing_score_{skills}_ms": _ms(score, f"matrix-vector product over {2 * skills} vectors + top-k"),
    }


def _synthetic_store(root: Path, skills: int, dim: int, embedder_name: str, seed: int) -> SkillStore:
    """A store holding only manifests and revision records (no adapter files): all the router reads."""
    rng = np.random.default_rng(seed)
    lora = LoraSpec(r=8, target_modules=("q_proj", "v_proj"))
    digest = "0" * 64
    for i in range(skills):
        name = f"skill-{i:05d}"
        manifest = SkillManifest(
            name=name,
            kind="memory",
            description=f"benchmark skill {i}: task family {i % 97}",
            base_fingerprint="bench",
            lora=lora,
            current=1,
            history=(HistoryEvent(action="create", revision=1),),
        )
        vector = rng.standard_normal(dim)
        record = RevisionRecord(
            skill=name,
            number=1,
            base_fingerprint="bench",
            lora=lora,
            size_bytes=0,
            trainable_params=0,
            files={"adapter_config.json": digest, "adapter_model.safetensors": digest},
            routing=RoutingVector(embedder=embedder_name, vector=tuple(vector / np.linalg.norm(vector)), n_prompts=8),
        )
        folder = root / name
        (folder / "revs" / "1").mkdir(parents=True)
        (folder / MANIFEST).write_text(manifest.model_dump_json())
        (folder / "revs" / "1" / REVISION).write_text(record.model_dump_json())
    return SkillStore(root)


def measure_index_refresh(*, skills: int = 10_000, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """`routing_refresh_<skills>_ms`: the first route after one write rescans every manifest (and embeds only the
    changed skill's description). Descriptions are embedded by the hashing stand-in here, so the figure is the scan;
    add one `routing_embed_ms` for the real embedder."""
    embedder = HashingEmbedder(384)
    with tempfile.TemporaryDirectory(prefix="habitloop-route-bench-") as tmp:
        store = _synthetic_store(Path(tmp) / "skills", skills, embedder.dimension, embedder.name, seed)
        index = RoutingIndex(store, embedder)
        index.refresh()  # the first build: every manifest and revision record read once
        samples = []
        for i in range(repeats):
            manifest = store.get(f"skill-{i:05d}")
            atomic_write_json(
                store.skill_dir(manifest.name) / MANIFEST,
                manifest.model_copy(update={"description": f"changed {i}"}).model_dump(mode="json"),
            )
            (store.root / ".generation").write_text(str(store.generation() + 1))  # as a store write would
            started = time.perf_counter()
            if not index.refresh():
                raise OperatorError(
                    "the routing index missed a store change: a route after this write would use stale skills",
                    hint="a bug in agent/router.py's change detection (RoutingIndex.refresh); please report it",
                )
            samples.append(time.perf_counter() - started)
    return {
        f"routing_refresh_{skills}_ms": _ms(
            samples, f"index rebuild after one write: {skills} manifests rescanned, one description embedded"
        )
    }


def main() -> None:
    import json
    import os

    import torch

    from memory.embed import Embedder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = os.environ.get("HABITLOOP_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    figures = measure_routing(Embedder()) | measure_index_refresh()
    payload = {name: figure.model_dump() for name, figure in figures.items()}
    print(json.dumps({"torch_threads": torch.get_num_threads(), "figures": payload}, indent=2))


if __name__ == "__main__":
    main()
