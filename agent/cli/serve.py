"""`habitloop serve` (an OpenAI-compatible server over the shared base) and `habitloop bench-serve` (its load test).

Root commands: `agent/cli/app.py` registers each with one line; the heavy imports happen inside the commands.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Any

import typer

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.config import Settings


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    host: Annotated[str, typer.Option(help="address to bind; anything but loopback exposes the model")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="HABITLOOP_API_KEY", help="require `Authorization: Bearer KEY`"),
    ] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="requests generated together at most")] = 8,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="how long a request waits for batch-mates")] = 10.0,
    continuous: Annotated[
        bool,
        typer.Option(
            "--continuous/--flush",
            help="requests join the running decode between steps (skills need adapter slots, HABITLOOP_SLOTS), or "
            "wait for flushed batches",
        ),
    ] = False,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="larger request bodies get 413")] = 1_000_000,
    read_timeout: Annotated[
        float, typer.Option(min=0.1, help="seconds a client has to send a whole request; slower ones are cut off")
    ] = 10.0,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level")] = "info",
) -> None:
    """Serve the base and every skill over an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    The `model` of a request names the skills: `base`, `tool-habits`, `tool-habits@3`, `tool-habits+other`.
    """
    from agent.serve.app import ServeConfig, serve_local

    if not _is_loopback(host) and api_key is None:
        output.err_console.print(
            f"[yellow]warning:[/yellow] serving on {host} without --api-key: anyone who can reach it can use it"
        )
    serve_local(
        Settings(),
        host=host,
        port=port,
        config=ServeConfig(api_key=api_key, max_body_bytes=max_body_bytes, read_timeout=read_timeout),
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        continuous=continuous,
        log_level=log_level,
    )


def bench_serve(
    clients: Annotated[int, typer.Option(min=1, help="concurrent clients")] = 16,
    seconds: Annotated[float, typer.Option(min=1, help="how long the clients keep sending")] = 30.0,
    skills: Annotated[int, typer.Option(min=2, help="random adapters in the server's store")] = 4,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens of each request")] = 16,
    continuous: Annotated[
        bool | None,
        typer.Option("--continuous/--flush", help="the server's batching (default: its own)", show_default=False),
    ] = None,
    slots: Annotated[
        int | None, typer.Option(min=0, help="the server's adapter slots, HABITLOOP_SLOTS (default: as configured)")
    ] = None,
    compare_batching: Annotated[
        bool,
        typer.Option(
            "--compare-batching",
            help="run twice: flushed, then continuous batching (slots: --slots or 8), side by side",
        ),
    ] = False,
    compare_vllm: Annotated[
        bool, typer.Option("--compare-vllm", help="instead: transformers vs vLLM tokens/s (GPU with vllm only)")
    ] = False,
    as_json: JsonFlag = False,
    save_to: Annotated[Path | None, typer.Option("--output", "-o", help="also write the JSON here")] = None,
) -> None:
    """Load and faults against `habitloop serve` on loopback (a subprocess over random adapters on the real base).

    Reports requests/s, p50/p99 latency, time to first token (every request streams), errors, and what happened to a
    client that hung up mid-stream and to requests for a skill deleted during the run. Saved as
    reports/bench-serve.json.
    """
    from rich.table import Table

    from agent.bench import serve as bench

    settings = Settings()
    if compare_vllm:
        bench.seed_store(settings, skills=skills)
        payload: dict[str, Any] = bench.compare_backends(settings, skills=skills, max_tokens=max_tokens)
    elif compare_batching:
        payload = bench.compare_batching(
            settings, clients=clients, seconds=seconds, skills=skills, max_tokens=max_tokens, slots=slots or 8
        )
    else:
        payload = bench.run_load(
            settings, clients=clients, seconds=seconds, skills=skills, max_tokens=max_tokens,
            continuous=continuous, slots=slots,
        ).model_dump(mode="json")  # fmt: skip
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    name = "bench-vllm.json" if compare_vllm else "bench-serve.json"
    for path in filter(None, (save_to, settings.reports_dir / name)):
        path.write_text(json.dumps(payload, indent=2) + "\n")
    if as_json:
        output.print_json(payload)
        return
    table = Table(show_header=False, title="habitloop serve under load" if not compare_vllm else "backends")
    for key, value in payload.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    output.console.print(table)
