"""`habitloop serve` (an OpenAI-compatible server over the shared base) and `habitloop bench-serve` (its load test).

Registered in `agent/cli.py` with one line each; the heavy imports happen inside the commands.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

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
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="larger request bodies get 413")] = 1_000_000,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level")] = "info",
) -> None:
    """Serve the base and every skill over an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    The `model` of a request names the skills: `base`, `tool-habits`, `tool-habits@3`, `tool-habits+other`.
    """
    from rich.console import Console

    from agent.serve import ServeConfig, serve_local

    if not _is_loopback(host) and api_key is None:
        Console(stderr=True).print(
            f"[yellow]warning:[/yellow] serving on {host} without --api-key: anyone who can reach it can use it"
        )
    serve_local(
        Settings(),
        host=host,
        port=port,
        config=ServeConfig(api_key=api_key, max_body_bytes=max_body_bytes),
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        log_level=log_level,
    )
