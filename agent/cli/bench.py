"""`habitloop bench` (speed and memory of the foundation) and `habitloop demo` (the loop end to end on BFCL).

Root commands: `agent/cli/app.py` registers each with one line; the heavy imports happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import agent.cli.output as output
from agent.cli.output import JsonFlag
from agent.config import Settings
from skills.files import atomic_write_json


def bench(
    as_json: JsonFlag = False,
    skills: Annotated[
        str, typer.Option(help="store sizes for switch/load, comma-separated ('' skips)")
    ] = "10,100,1000",
    hot: Annotated[str, typer.Option(help="skills hot in the model for switch/load, comma-separated")] = "1,8,64",
    decode_tokens: Annotated[int, typer.Option(help="tokens per decode / mixed-batch measurement (0: skip both)")] = 32,
    routing: Annotated[int, typer.Option(help="skills in the routing benchmark (0: skip)")] = 10_000,
    instances: Annotated[int, typer.Option(help="personal instances in the instance benchmark (0: skip)")] = 1000,
    repeats: Annotated[int, typer.Option(min=1, help="repetitions per figure (the median is reported)")] = 7,
    cold_gguf: Annotated[bool, typer.Option(help="also time a cold GGUF conversion (~30 s)")] = True,
    consolidation: Annotated[
        int, typer.Option(help="episodes for the consolidation benchmark (0: skip; 64 takes a few minutes)")
    ] = 64,
    training_steps: Annotated[
        int, typer.Option(help="steps of the long training run on the BFCL headline demonstrations (0: skip; ~15 min)")
    ] = 200,
    contended_steps: Annotated[
        int, typer.Option(help="steps of the same run beside a busy loop on one core (0: skip)")
    ] = 30,
    packed_steps: Annotated[
        int, typer.Option(help="steps of the same run with each batch packed into rows, against padded rows (0: skip)")
    ] = 0,
    serve_seconds: Annotated[
        float, typer.Option(help="seconds of load on `habitloop serve`, flushed then continuous batching (0: skip)")
    ] = 30.0,
    serve_clients: Annotated[int, typer.Option(min=1, help="concurrent clients of the serve benchmark")] = 16,
    runtime_resident: Annotated[
        str, typer.Option(help="resident skills for the adapter-slot switch/load figures, comma-separated ('' skips)")
    ] = "1,8,64,1000",
    only: Annotated[
        str,
        typer.Option(
            help="run just these subjects, comma-separated: base, skills, runtime, serve, routing, instances, "
            "consolidation, training (default: all)"
        ),
    ] = "",
    save_to: Annotated[Path | None, typer.Option("--output", "-o", help="also write the JSON here")] = None,
) -> None:
    """Measure base load, decoding with composed skills, mixed-skill batches, hot switch / cold load against plain
    peft, the server under load before/after continuous batching, routing, consolidation and a long training run;
    print a table (or JSON) and save it under reports/bench.json."""
    from agent.bench.runner import render_table, run_bench

    sizes = [int(s) for s in skills.split(",") if s.strip()]
    result = run_bench(
        Settings(),
        store_sizes=sizes,
        hot_sizes=[int(h) for h in hot.split(",") if h.strip()],
        decode_tokens=decode_tokens or None,
        routing_skills=routing or None,
        instances=instances or None,
        repeats=repeats,
        cold_gguf=cold_gguf,
        consolidation_episodes=consolidation or None,
        runtime_resident=[int(r) for r in runtime_resident.split(",") if r.strip()],
        training_steps=training_steps or None,
        contended_steps=contended_steps,
        packed_steps=packed_steps,
        serve_seconds=serve_seconds or None,
        serve_clients=serve_clients,
        only=frozenset(s.strip() for s in only.split(",") if s.strip()) or None,
        progress=True,
    )
    payload = result.model_dump(mode="json")
    settings = Settings()
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    for path in filter(None, (save_to, settings.reports_dir / "bench.json")):
        atomic_write_json(path, payload)
    if as_json:
        output.print_json(payload)
    else:
        output.console.print(render_table(result))


def demo() -> None:
    """Demonstrations -> buffer -> retrieval -> consolidation into a skill, measured end to end on the real base."""
    from agent.evals.demo import run_demo

    run_demo(Settings(), console=output.console)
