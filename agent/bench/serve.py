"""`habitloop bench-serve`: load and faults against `habitloop serve` on loopback, and the vLLM comparison.

The load test starts `habitloop serve` as its own process on a free loopback port, over a temporary home whose
store holds a few random adapters on the real base (r=8 on q,v, the serving shape; the base folder is linked from
the configured home, not copied). `clients` threads then send chat completions for `seconds`, each request naming
one of base / the skills, round robin. Meanwhile the faults happen: a client that disconnects after the first event
of a stream (several times), and the deletion of one skill from the store (by this process, as an operator would)
while requests for it are queued. Reported: requests/s, p50/p99 latency, errors (anything but 200, except the 404s
the deleted skill must give), the 404s, the server's own batching stats, and whether it still answers at the end.

`compare_backends` (run by `scripts/vllm_check.sh`) sends the same requests through the transformers backend and the
vLLM backend and reports tokens/s of each.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field

from agent.config import Settings
from skills.errors import OperatorError


class LoadResult(BaseModel):
    """What one load run measured (latencies in ms, over successful requests)."""

    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    clients: int
    seconds: float
    max_tokens: int
    models: list[str]
    requests: int
    ok: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float = Field(0.0, description="time to the first streamed piece of text (every request streams)")
    ttft_p99_ms: float = 0.0
    batching_mode: str = Field("", description="the server's: flush or continuous, and its adapter slots")
    errors: int = Field(description="requests that failed without a reason they should (goal: 0)")
    error_samples: list[str]
    deleted_skill: str
    deleted_at_s: float
    deleted_skill_404: int = Field(description="requests for the deleted skill answered 404 after its deletion")
    stream_disconnects: int = Field(description="streams this client closed after the first event")
    served_after: bool = Field(description="the server answered a request after the run")
    batching: dict[str, Any] = Field(description="the server's BatchingChatModel stats (from /health)")
    machine: dict[str, Any] = Field(description="cores, load average before/after (this machine is shared), threads")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seed_home(settings: Settings, home: Path, skills: int) -> tuple[list[str], Any]:
    """A temporary home: the configured base folder linked in, `skills` random adapters in its store."""
    from agent.base import load_base
    from agent.testing import random_adapter
    from skills.store import SkillStore

    base = load_base(settings=settings)  # converts the base into settings' models/ if it never was
    (home / "models").symlink_to(settings.models_dir.resolve(), target_is_directory=True)
    store = SkillStore(home / "skills", base_fingerprint=base.fingerprint)
    names = []
    for index in range(skills):
        folder = random_adapter(base, home / "adapters" / f"s{index}", seed=index)
        names.append(store.create(f"bench-s{index}", folder, kind="tool_habit").name)
    return names, store


def run_load(
    settings: Settings | None = None,
    *,
    clients: int = 16,
    seconds: float = 30.0,
    skills: int = 4,
    max_tokens: int = 16,
    startup_timeout: float = 180.0,
    continuous: bool | None = None,
    slots: int | None = None,
) -> LoadResult:
    """Start `habitloop serve` on loopback over random adapters and drive it with `clients` concurrent clients.

    `continuous` (`--continuous` / `--flush`; None: the server's default) and `slots` (`HABITLOOP_SLOTS`; None: as
    configured here) set up the server's batching."""
    settings = settings or Settings()
    with tempfile.TemporaryDirectory(prefix="habitloop-bench-serve-") as tmp:
        home = Path(tmp)
        names, store = _seed_home(settings, home, skills)
        models = ["base", *names]
        deleted = names[-1]
        port = _free_port()
        env = {**os.environ, "HABITLOOP_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        if slots is not None:
            env["HABITLOOP_SLOTS"] = str(slots)
        command = [sys.executable, "-m", "agent.cli", "serve", "--port", str(port), "--log-level", "warning"]
        if continuous is not None:
            command.append("--continuous" if continuous else "--flush")
        server = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url, server, startup_timeout)
            health = httpx.get(f"{url}/health", timeout=10).json()
            mode = f"{health.get('mode', '?')}, slots {env.get('HABITLOOP_SLOTS') or 0}"
            return _drive(url, store, models, deleted, clients, seconds, max_tokens, mode)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


def compare_batching(settings: Settings | None = None, *, slots: int = 8, **load: Any) -> dict[str, Any]:
    """The same load twice on adapter slots, flushed batches then continuous batching, and their ratios
    (continuous over flush: above 1 is better for requests/s, below 1 for latencies)."""
    flush = run_load(settings, continuous=False, slots=slots, **load)
    continuous = run_load(settings, continuous=True, slots=slots, **load)

    def ratio(key: str) -> float:
        before, after = getattr(flush, key), getattr(continuous, key)
        return round(after / before, 3) if before else 0.0

    return {
        "flush": flush.model_dump(mode="json"),
        "continuous": continuous.model_dump(mode="json"),
        "continuous_over_flush": {key: ratio(key) for key in ("requests_per_s", "p50_ms", "p99_ms", "ttft_p50_ms")},
    }


def _wait_until_up(url: str, server: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log = server.stderr.read()[-2000:] if server.stderr else ""
            raise OperatorError(f"habitloop serve exited with {server.returncode}: {log}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise OperatorError(f"habitloop serve did not answer on {url} within {timeout:.0f} s")


class _Load:
    """One load run's clients and faults, and what they saw (shared between their threads, under `lock`)."""

    def __init__(self, url: str, store: Any, models: list[str], deleted: str, seconds: float, max_tokens: int) -> None:
        self.url, self.store, self.models, self.deleted = url, store, models, deleted
        self.seconds, self.max_tokens = seconds, max_tokens
        self.latencies: list[float] = []
        self.first_pieces: list[float] = []
        self.errors: list[str] = []
        self.gone_404 = 0
        self.requests = 0
        self.stream_disconnects = 0
        self.deleted_at: list[float] = []
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.deadline = self.started + seconds

    def client(self, index: int) -> None:
        """Chat completions until the deadline, naming base and the skills round robin."""
        with httpx.Client(base_url=f"{self.url}/v1", timeout=max(300.0, self.seconds)) as http:
            turn = index
            while time.monotonic() < self.deadline:
                model = self.models[turn % len(self.models)]
                turn += 1
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": f"Client {index}, question {turn}: name a fruit."}],
                    "max_tokens": self.max_tokens,
                }
                sent = time.monotonic()
                first: float | None = None
                try:
                    with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as response:
                        status, text = response.status_code, ""
                        for line in response.iter_lines():
                            if first is None and '"content": "' in line and '"content": ""' not in line:
                                first = time.monotonic() - sent
                            text = text or line[:200]
                except httpx.HTTPError as error:
                    status, text = -1, repr(error)
                self.record(model, status, text, time.monotonic() - sent, first)

    def record(self, model: str, status: int, text: str, elapsed: float, first: float | None = None) -> None:
        with self.lock:
            self.requests += 1
            if status == 200:
                self.latencies.append(elapsed * 1000)
                if first is not None:
                    self.first_pieces.append(first * 1000)
            elif status == 404 and model == self.deleted and self.deleted_at:
                self.gone_404 += 1  # answered after the skill was deleted (queued before or sent after): expected
            else:
                self.errors.append(f"{model}: {status} {text}")

    def disconnecting_streams(self) -> None:
        """Three streams, a quarter into the run, each closed after its first event."""
        time.sleep(self.seconds / 4)
        for _ in range(3):
            body = {
                "model": self.models[1],
                "messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": self.max_tokens,
                "stream": True,
            }
            try:
                with (
                    httpx.Client(timeout=max(300.0, self.seconds)) as http,
                    http.stream("POST", f"{self.url}/v1/chat/completions", json=body) as response,
                ):
                    next(response.iter_lines())  # one event, then hang up
                self.stream_disconnects += 1
            except (httpx.HTTPError, StopIteration) as error:
                with self.lock:
                    self.errors.append(f"stream: {error!r}")

    def delete_one(self) -> None:
        """Halfway through, delete a skill from the store, as an operator would, while requests for it are queued."""
        time.sleep(self.seconds / 2)
        self.deleted_at.append(time.monotonic())
        self.store.delete(self.deleted)

    def run(self, clients: int) -> float:
        """Every client and fault in its thread, until all are done; returns the wall time."""
        threads = [threading.Thread(target=self.client, args=(i,)) for i in range(clients)]
        threads.append(threading.Thread(target=self.disconnecting_streams))
        threads.append(threading.Thread(target=self.delete_one))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.monotonic() - self.started


def _p99(ordered: list[float]) -> float:
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1) if ordered else 0.0


def _drive(
    url: str, store: Any, models: list[str], deleted: str, clients: int, seconds: float, max_tokens: int, mode: str
) -> LoadResult:
    load_before = os.getloadavg()[0]
    load = _Load(url, store, models, deleted, seconds, max_tokens)
    wall = load.run(clients)
    after = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": models[0], "messages": [{"role": "user", "content": "still there?"}], "max_tokens": 4},
        timeout=120,
    )
    health = httpx.get(f"{url}/health", timeout=10).json()
    ordered, firsts = sorted(load.latencies), sorted(load.first_pieces)
    return LoadResult(
        clients=clients,
        seconds=round(wall, 1),
        max_tokens=max_tokens,
        models=models,
        requests=load.requests,
        ok=len(ordered),
        requests_per_s=round(len(ordered) / wall, 2),
        p50_ms=round(statistics.median(ordered), 1) if ordered else 0.0,
        p99_ms=_p99(ordered),
        ttft_p50_ms=round(statistics.median(firsts), 1) if firsts else 0.0,
        ttft_p99_ms=_p99(firsts),
        batching_mode=mode,
        errors=len(load.errors),
        error_samples=load.errors[:5],
        deleted_skill=deleted,
        deleted_at_s=round(load.deleted_at[0] - load.started, 1) if load.deleted_at else -1,
        deleted_skill_404=load.gone_404,
        stream_disconnects=load.stream_disconnects,
        served_after=after.status_code == 200,
        batching=health.get("batching", {}),
        machine={
            "cores": os.cpu_count(),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "server_torch_threads": os.environ.get("HABITLOOP_THREADS", "torch default"),
            "python": sys.version.split()[0],
        },
    )


# --------------------------------------------------------------------------------------------------------- vLLM


def compare_backends(
    settings: Settings | None = None, *, skills: int = 4, prompts: int = 64, max_tokens: int = 64
) -> dict[str, Any]:
    """Same skills, same prompts, greedy: tokens/s of the transformers backend and of the vLLM backend.

    Runs where vLLM runs (a CUDA GPU, or its CPU build in `.venv-vllm`); the transformers backend runs as habitloop
    runs it (`LocalChatModel`, on the device `load_base` puts the base on), batched 8 at a time through
    `generate_batch`.
    """
    from agent.backends.protocol import ChatRequest
    from agent.backends.vllm_backend import VLLMChatModel, on_cpu
    from agent.runtime import local_runtime

    settings = settings or Settings()
    local = local_runtime(settings)
    store = local.store
    names = [m.name for m in store.list()][:skills]
    choices: list[list[tuple[str, int]]] = [[], *[[(n, store.get(n).current)] for n in names]]
    requests = [
        ChatRequest(
            messages=[{"role": "user", "content": f"Question {i}: explain one thing about the number {i}."}],
            skills=choices[i % len(choices)],
            max_new_tokens=max_tokens,
        )
        for i in range(prompts)
    ]

    def measure(model: Any, chunk: int) -> dict[str, Any]:
        model.generate_batch(requests[:2])  # warm up
        started = time.perf_counter()
        results = []
        for i in range(0, len(requests), chunk):
            results.extend(model.generate_batch(requests[i : i + chunk]))
        wall = time.perf_counter() - started
        tokens = sum(r.completion_tokens for r in results)
        return {"seconds": round(wall, 3), "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 1)}

    figures = {"transformers": {**measure(local.model, 8), "device": str(next(local.base.model.parameters()).device)}}
    vllm_model = VLLMChatModel.from_settings(settings)
    figures["vllm"] = {**measure(vllm_model, len(requests)), "device": "cpu" if on_cpu() else "cuda"}
    figures["speedup"] = round(figures["vllm"]["tokens_per_s"] / max(figures["transformers"]["tokens_per_s"], 1e-9), 2)
    return {"skills": names, "prompts": prompts, "max_tokens": max_tokens, "figures": figures}


def seed_store(settings: Settings | None = None, *, skills: int = 4) -> list[str]:
    """Put `skills` random adapters (`bench-s<i>`) into the configured store, for the GPU check; returns names."""
    from agent.base import load_base
    from agent.testing import random_adapter
    from skills.store import SkillStore

    settings = settings or Settings()
    base = load_base(settings=settings)
    store = SkillStore(settings.skills_dir, base_fingerprint=base.fingerprint)
    names = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(skills):
            name = f"bench-s{index}"
            if not store.exists(name):
                store.create(name, random_adapter(base, Path(tmp) / name, seed=index), kind="tool_habit")
            names.append(name)
    return names
