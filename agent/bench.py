"""`habitloop bench`: speed and memory of the foundation, measured (never asserted in tests).

Each figure is warmed up first, then the median of several repetitions. The JSON records the machine, torch's
thread count, the model and the library versions, so figures from different runs can be compared honestly.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.table import Table

from agent.base import load_base
from agent.config import Settings
from agent.testing import random_adapter
from skills import Residency, SkillStore
from skills._files import library_versions


class Figure(BaseModel):
    """One measured quantity: the median of `samples` (seconds or milliseconds, as `unit` says)."""

    median: float
    unit: str
    samples: list[float]
    note: str = ""


class BenchResult(BaseModel):
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    machine: dict[str, Any]
    torch_threads: int
    versions: dict[str, str]
    model: dict[str, Any]
    figures: dict[str, Figure]
    peak_rss_mb: float


def _machine() -> dict[str, Any]:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(pages / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _figure(samples: list[float], unit: str, note: str = "") -> Figure:
    scale = 1000.0 if unit == "ms" else 1.0
    values = [round(s * scale, 4) for s in samples]
    return Figure(median=round(statistics.median(values), 4), unit=unit, samples=values, note=note)


def _random_adapter(base: Any, folder: Path, seed: int) -> Path:
    """A LoRA adapter of the common serving shape (r=8 on q,v) with random non-zero weights."""
    return random_adapter(base, folder, seed=seed)


def _measure_residency(base: Any, store: SkillStore, size: int, repeats: int) -> dict[str, Figure]:
    """Hot switch, cold load and warm load latencies with `size` skills in the store and up to 8 hot."""
    from peft import PeftModel

    figures: dict[str, Figure] = {}
    hot = min(8, size)
    residency = Residency(base.model, store, max_hot=hot, max_warm=size)
    names = [skill.name for skill in store.list()]
    for name in names[:hot]:  # warm up: make `hot` skills hot
        residency.activate(name)
    # hot switch: round robin among the hot skills (nothing is loaded, only set_adapter)
    switch = [_timed(partial(residency.activate, name)) for _ in range(repeats) for name in names[:hot]]
    figures[f"hot_switch_{size}"] = _figure(switch, "ms", f"{hot} hot, round robin")
    if size > hot:
        # cold load: disk -> verified tensors -> into the model (and the least recently used one out to warm).
        # The first one warms the path up and is not counted.
        cold = []
        for index in range(repeats + 1):
            name = next(n for n in names[hot:] + names if residency.state(n) != "hot")
            residency.evict(name)  # if it is warm, drop it to cold
            elapsed = _timed(partial(residency.activate, name))
            if index:
                cold.append(elapsed)
        figures[f"cold_load_{size}"] = _figure(cold, "ms", "read + checksum + add_adapter + set_adapter")
        # warm load: skills evicted to RAM come back without touching the disk
        disk_loads = residency.stats.disk_loads
        warm = [_timed(partial(residency.activate, key[0])) for key in residency.warm()[-repeats:]]
        if residency.stats.disk_loads != disk_loads:
            raise RuntimeError("a warm load read the disk: residency is broken")
        figures[f"warm_load_{size}"] = _figure(warm, "ms", "from RAM: add_adapter + set_adapter")
    if isinstance(residency.model, PeftModel):
        residency.model.unload()  # take every LoRA layer out again: the next size starts from the plain base
    return figures


def consolidation_child(home: str, episodes: int) -> None:
    """Run in a fresh process by `run_bench`: consolidate `episodes` demonstrations; print the report as JSON.

    A process of its own, so that its peak RSS is the consolidation's own (base + training + evaluation).
    """
    import json

    from agent.arithmetic import arithmetic_items, demonstration
    from agent.prompt import system_prompt
    from memory.chroma import ChromaBuffer
    from memory.consolidate import Consolidator
    from memory.embed import Embedder
    from tools import ToolRegistry, calculator

    settings = Settings(home=Path(home))
    base = load_base(settings=settings)
    store = SkillStore(settings.skills_dir, base_fingerprint=base.fingerprint)
    buffer = ChromaBuffer(settings.buffer_dir, embedder=Embedder())
    system = system_prompt(ToolRegistry([calculator]).schemas())
    buffer.add_many([demonstration(system, q, e) for q, e in arithmetic_items(episodes, seed=5)])
    started = time.perf_counter()
    residency = Residency(base.model, store)
    (report,) = Consolidator(buffer, store, residency, base.tokenizer, progress=False).run()
    wall = time.perf_counter() - started
    payload = report.model_dump(mode="json") | {"wall_seconds": wall, "peak_rss_mb": _peak_rss_mb()}
    print("CONSOLIDATION " + json.dumps(payload))


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _measure_consolidation(settings: Settings, episodes: int) -> dict[str, Figure]:
    import json
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "models").symlink_to(settings.models_dir.resolve())  # reuse the converted base
        code = f"from agent.bench import consolidation_child; consolidation_child({str(home)!r}, {episodes})"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
        if out.returncode != 0:
            raise RuntimeError(f"the consolidation benchmark failed:\n{out.stderr[-3000:]}")
        line = next(line for line in out.stdout.splitlines() if line.startswith("CONSOLIDATION "))
        report = json.loads(line.removeprefix("CONSOLIDATION "))
    note = (
        f"{episodes} episodes, {report['n_train']} trained + {report['n_replay']} replay, {len(report['losses'])} steps"
    )
    return {
        f"consolidate_{episodes}_wall": _figure([report["wall_seconds"]], "s", note + ", incl. evaluation"),
        f"consolidate_{episodes}_train_tokens_per_s": Figure(
            median=round(report["train_tokens_per_second"], 1),
            unit="tokens/s",
            samples=[round(report["train_tokens_per_second"], 1)],
            note="bf16 autocast, length-grouped batches of 4",
        ),
        f"consolidate_{episodes}_peak_rss": Figure(
            median=report["peak_rss_mb"], unit="MB", samples=[report["peak_rss_mb"]], note="the whole process"
        ),
    }


def run_bench(
    settings: Settings,
    *,
    store_sizes: list[int] | tuple[int, ...] = (10, 200),
    repeats: int = 7,
    cold_gguf: bool = True,
    consolidation_episodes: int | None = 64,
    routing_skills: int | None = 10_000,
    progress: bool = True,
) -> BenchResult:
    import torch

    def say(text: str) -> None:
        if progress:
            print(text, flush=True)

    figures: dict[str, Figure] = {}
    if cold_gguf:
        say("base load, cold (GGUF parse + dequantize + save to a fresh cache)...")
        with tempfile.TemporaryDirectory() as tmp:
            cold_settings = settings.model_copy(update={"home": Path(tmp)})
            figures["base_load_cold_gguf"] = _figure([_timed(lambda: load_base(settings=cold_settings))], "s")
    say("base load, cached...")
    base = load_base(settings=settings)  # also makes sure the cache exists
    samples = [_timed(lambda: load_base(settings=settings)) for _ in range(repeats)]
    figures["base_load_cached"] = _figure(samples, "s", "from $HABITLOOP_HOME/models, incl. fingerprint")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        template = _random_adapter(base, root / "template", seed=0)
        for size in store_sizes:
            say(f"store with {size} skills: creating...")
            store = SkillStore(root / f"store-{size}", base_fingerprint=base.fingerprint)
            for index in range(size):
                store.create(f"skill-{index:05d}", template, kind="memory", description=f"benchmark skill {index}")
            figures |= _measure_residency(base, store, size, repeats)
            shutil.rmtree(root / f"store-{size}", ignore_errors=True)

    if routing_skills:
        from agent.bench_route import measure_index_refresh, measure_routing
        from memory.embed import Embedder

        say(f"routing with {routing_skills} skills (synthetic vectors, real MiniLM embedding)...")
        figures |= measure_routing(Embedder(), skills=routing_skills, repeats=max(repeats, 21))
        figures |= measure_index_refresh(skills=routing_skills)

    if consolidation_episodes:
        say(f"consolidation of {consolidation_episodes} episodes (a process of its own, a few minutes)...")
        figures |= _measure_consolidation(settings, consolidation_episodes)

    return BenchResult(
        machine=_machine(),
        torch_threads=torch.get_num_threads(),
        versions=library_versions(),
        model={"name": base.name, "fingerprint": base.fingerprint, "parameters": base.parameters},
        figures=figures,
        peak_rss_mb=_peak_rss_mb(),
    )


def render_table(result: BenchResult) -> Table:
    table = Table(title=f"habitloop bench: {result.model['name']}, {result.torch_threads} threads")
    for column in ("figure", "median", "unit", "samples", "note"):
        table.add_column(column)
    for name, figure in result.figures.items():
        table.add_row(name, f"{figure.median:g}", figure.unit, str(len(figure.samples)), figure.note)
    table.caption = f"peak RSS {result.peak_rss_mb} MB; {result.machine['cores']} cores, {result.machine['ram_gb']} GB"
    return table
