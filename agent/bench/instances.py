"""The personal-instances benchmark: many users, each with a small personal adapter, on one shared base.

`run_instance_bench` makes `instances` personal stores (`instances/<user>/preference`, LoRA rank 4 on q,v with
random non-zero weights: the size and load cost of a real one, without training a thousand), then serves
`requests` one-turn requests through one process-wide `Residency` (hot / warm / cold LRU shared by all users),
mixing a small set of active users (hot) with users not seen for a while (cold: read from disk, checked, loaded).

Figures: store size on disk, bytes per instance against a full copy of the base (the paper's Scale Out contrast),
per-request latency p50/p99 for hot, cold and all requests, peak RSS. Measured, never asserted.
`habitloop bench` runs it (`--instances`); `python -m agent.bench.instances --instances 1000` runs it alone.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from skills import LoraSpec, Residency, SkillStore
from skills.instances import LayeredStore, instance_store, qualify

PERSONAL_LORA = LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj"))


class LatencyFigures(BaseModel):
    """Per-request latency (ms) of one class of requests."""

    count: int
    p50_ms: float | None
    p99_ms: float | None


class InstanceBenchResult(BaseModel):
    """What `run_instance_bench` measured."""

    instances: int
    lora: dict[str, Any]
    requests: int
    hot_users: int
    hot_share: float = Field(description="share of requests that went to the hot users")
    max_new_tokens: int
    max_hot: int
    max_warm: int
    create_seconds: float = Field(description="time to create every personal store")
    store_bytes: int = Field(description="all instances' folders on disk")
    bytes_per_instance: float
    adapter_bytes: int = Field(description="one instance's adapter weights file")
    full_model_bytes: int = Field(description="one full copy of the base's weights (fp32 safetensors)")
    instances_per_model_copy: float = Field(description="full_model_bytes / bytes_per_instance")
    hot: LatencyFigures = Field(description="requests whose adapter was loaded in the model")
    warm: LatencyFigures = Field(description="requests whose adapter was in RAM (evicted from the model)")
    cold: LatencyFigures = Field(description="requests whose adapter was read from disk")
    all: LatencyFigures
    peak_rss_mb: float
    torch_threads: int


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 2)


def _figures(values: list[float]) -> LatencyFigures:
    return LatencyFigures(count=len(values), p50_ms=_percentile(values, 50), p99_ms=_percentile(values, 99))


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _template_adapter(base: Any, folder: Path) -> dict[str, Any]:
    """One PEFT-format adapter of the personal shape; returns its tensors (to perturb per user)."""
    from safetensors.torch import load_file

    from skills.train import save_adapter, temporary_adapter

    with temporary_adapter(base.model, PERSONAL_LORA) as (model, name):
        save_adapter(model, name, folder)
    return load_file(str(folder / "adapter_model.safetensors"))


def make_instances(base: Any, instances_dir: Path, count: int, *, seed: int = 0) -> list[str]:
    """`count` users `user-0000`... each with a personal `preference` skill of distinct random weights."""
    import torch
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "adapter"
        template = _template_adapter(base, folder)
        generator = torch.Generator().manual_seed(seed)
        users = []
        for index in range(count):
            user = f"user-{index:04d}"
            tensors = {k: torch.randn(v.shape, generator=generator) * 0.01 for k, v in template.items()}
            save_file(tensors, str(folder / "adapter_model.safetensors"))
            store = instance_store(instances_dir, user, base_fingerprint=base.fingerprint)
            store.create("preference", folder, kind="preference", description=f"{user}'s preferences")
            users.append(user)
    return users


def run_instance_bench(
    base: Any,
    home: Path | None = None,
    *,
    instances: int = 1000,
    requests: int = 200,
    hot_users: int = 8,
    hot_share: float = 0.8,
    max_new_tokens: int = 8,
    max_hot: int = 8,
    max_warm: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> InstanceBenchResult:
    """Create `instances` personal adapters under `home` (a temp folder by default) and serve mixed requests."""
    import torch

    from agent.backends.local import LocalChatModel

    owned = home is None
    root = Path(tempfile.mkdtemp(prefix="habitloop-instances-")) if owned else Path(home)  # type: ignore[arg-type]
    try:
        instances_dir = root / "instances"
        started = time.perf_counter()
        users = make_instances(base, instances_dir, instances, seed=seed)
        create_seconds = time.perf_counter() - started
        shared = SkillStore(root / "skills", base_fingerprint=base.fingerprint)
        residency = Residency(base.model, LayeredStore(shared, instances_dir), max_hot=max_hot, max_warm=max_warm)
        model = LocalChatModel(base, residency)
        rng = random.Random(seed)
        hot_set = users[: min(hot_users, len(users))]
        cold_pool = users[len(hot_set) :] or users
        for user in hot_set:  # warm-up: the active users are resident, as in a running service
            model.generate(
                [{"role": "user", "content": "hi"}], skills=[(qualify(user, "preference"), 1)], max_new_tokens=1
            )
        times: dict[str, list[float]] = {"hot": [], "warm": [], "cold": []}
        prompts = ("Say hello.", "Name a colour.", "What is two plus two?", "Give me one word for happy.")
        for index in range(requests):
            user = rng.choice(hot_set) if rng.random() < hot_share else rng.choice(cold_pool)
            name = qualify(user, "preference")
            kind = residency.state(name, 1)
            messages = [{"role": "user", "content": prompts[index % len(prompts)]}]
            began = time.perf_counter()
            model.generate(messages, skills=[(name, 1)], max_new_tokens=max_new_tokens)
            times[kind].append((time.perf_counter() - began) * 1000)
            if progress and index % 20 == 0:
                print(f"request {index}/{requests}", flush=True)
        store_bytes = _folder_bytes(instances_dir)
        adapter_bytes = (instances_dir / users[0] / "preference" / "revs" / "1" / "adapter_model.safetensors").stat()
        full = sum(p.numel() * p.element_size() for p in base.model.parameters())
        per_instance = store_bytes / max(1, len(users))
        if hasattr(residency.model, "unload"):
            residency.model.unload()  # give the caller its base back without LoRA layers
        return InstanceBenchResult(
            instances=len(users),
            lora=PERSONAL_LORA.model_dump(),
            requests=requests,
            hot_users=len(hot_set),
            hot_share=hot_share,
            max_new_tokens=max_new_tokens,
            max_hot=max_hot,
            max_warm=max_warm,
            create_seconds=round(create_seconds, 2),
            store_bytes=store_bytes,
            bytes_per_instance=round(per_instance, 1),
            adapter_bytes=adapter_bytes.st_size,
            full_model_bytes=full,
            instances_per_model_copy=round(full / per_instance, 1),
            hot=_figures(times["hot"]),
            warm=_figures(times["warm"]),
            cold=_figures(times["cold"]),
            all=_figures([t for values in times.values() for t in values]),
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            torch_threads=torch.get_num_threads(),
        )
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    import argparse

    from agent.base import load_base
    from agent.config import Settings

    parser = argparse.ArgumentParser(description="personal-instances benchmark")
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    base = load_base(settings=Settings())
    result = run_instance_bench(base, instances=args.instances, requests=args.requests, progress=True)
    text = json.dumps(result.model_dump(mode="json"), indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
