"""Training that stays small and steady: a long LoRA run on the BFCL headline demonstrations, alone and beside a
competing CPU-bound process (`habitloop bench --only training`).

Each run is a process of its own, so its peak RSS is the run's own: the base, the 282 demonstrations of the headline
recipe (simple_python + multiple train splits, never a test case), the default `TrainConfig`. The figures are the
issue's: `train_peak_rss_gb`, `train_step_s_first20` / `train_step_s_last20` (the median step of the first and the
last 20: does a step slow as the run goes on?), `train_tokens_per_s`, and `train_tokens_per_s_contended` beside a
busy loop on one core, with its ratio to the same steps alone. Unless `HABITLOOP_THREADS` pins them, the threads
follow the free cores (`FairShare`, skills/threads.py): `contended_threads_per_step` shows what it chose.
With `packed_steps`, the same first steps again with each batch packed into rows (`TrainConfig.pack_width`):
`train_tokens_per_s_packed` and `packed_over_padded` against the padded run's same steps.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.bench.figures import Figure
from agent.config import Settings
from skills.errors import OperatorError

CATEGORIES = ("simple_python", "multiple")  # the headline recipe's train demonstrations


def rss_mb() -> float:
    """This process's resident memory now (not its peak), in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def headline_examples(settings: Settings) -> list[Any]:
    """The BFCL headline recipe's training conversations: every train demonstration of `CATEGORIES`."""
    from agent.evals.bfcl.data import load_cases
    from agent.evals.bfcl.practice import demonstration
    from memory.dataset import example_from

    cases = [case for category in CATEGORIES for case in load_cases(settings.home, category, "train")]
    return [example_from(demonstration(case)) for case in cases]


def training_child(home: str, steps: int, pack_width: int = 0) -> None:
    """Run in a fresh process: train `steps` steps on the headline demonstrations; print the measurements as JSON.

    `pack_width` > 0 packs each step's examples into rows (`TrainConfig.pack_width`): the same batches, laid out
    without most of the padding.
    """
    import tempfile

    import torch

    from agent.base import load_base
    from skills.train import TrainConfig, train_lora

    settings = Settings(home=Path(home))
    base = load_base(settings=settings)
    examples = headline_examples(settings)
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        result = train_lora(
            base.model, base.tokenizer, examples, Path(tmp) / "adapter",
            config=TrainConfig(steps=steps, pack_width=pack_width), progress=False,
            on_step=lambda step, loss: rss.append(round(rss_mb(), 1)),
        )  # fmt: skip
    payload = {
        "examples": len(examples),
        "step_seconds": result.step_seconds,
        "step_tokens": result.step_tokens,
        "step_threads": result.step_threads,
        "step_rss_mb": rss,
        "tokens_per_second": result.tokens_per_second,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }
    print("TRAINING " + json.dumps(payload), flush=True)


def _run_child(settings: Settings, steps: int, pack_width: int = 0) -> dict[str, Any]:
    code = (
        "from agent.bench.training import training_child; "
        f"training_child({str(settings.home)!r}, {steps}, pack_width={pack_width})"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=4 * 3600)
    if out.returncode != 0:
        raise OperatorError(
            f"the training benchmark failed:\n{out.stderr[-3000:]}",
            hint="its own process's error is above; the BFCL data comes with `make setup`",
        )
    line = next(line for line in out.stdout.splitlines() if line.startswith("TRAINING "))
    return dict(json.loads(line.removeprefix("TRAINING ")))


def _busy_loop() -> subprocess.Popen[bytes]:
    """One competing CPU-bound process (a pure Python loop: one core, no threads of its own)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _tokens_per_s(run: dict[str, Any], steps: int) -> float:
    return sum(run["step_tokens"][:steps]) / sum(run["step_seconds"][:steps])


def _beside(alone: dict[str, Any], other: dict[str, Any], steps: int, rate: str, ratio: str) -> dict[str, float]:
    """`other`'s tokens/s over its first `steps` steps, and its ratio to the same steps alone (the same batches)."""
    same = min(steps, len(alone["step_seconds"]))
    other_rate = _tokens_per_s(other, same)
    return {rate: round(other_rate, 1), ratio: round(other_rate / _tokens_per_s(alone, same), 3)}


PACK_WIDTH = 1024  # two of the longest headline demonstrations (512 tokens) to a row


def measure_training(
    settings: Settings,
    *,
    steps: int = 200,
    contended_steps: int = 30,
    packed_steps: int = 0,
    say: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, Figure]]:
    """`steps` steps alone, then `contended_steps` (the same batches: same seed) beside a busy loop, then
    `packed_steps` of the same batches packed into rows of `PACK_WIDTH` tokens."""
    say(f"training: {steps} steps on the headline demonstrations, alone (a process of its own)...")
    alone = _run_child(settings, steps)
    contended = None
    if contended_steps:
        say(f"training: {contended_steps} steps beside a busy loop on one core...")
        competitor = _busy_loop()
        try:
            time.sleep(1.0)  # let it take its core
            contended = _run_child(settings, contended_steps)
        finally:
            competitor.kill()
            competitor.wait()
    packed = None
    if packed_steps:
        say(f"training: {packed_steps} steps of the same batches packed into rows of {PACK_WIDTH} tokens...")
        packed = _run_child(settings, packed_steps, pack_width=PACK_WIDTH)
    step_s = alone["step_seconds"]
    window = min(20, len(step_s))
    first, last = statistics.median(step_s[:window]), statistics.median(step_s[-window:])
    summary: dict[str, Any] = {
        "steps": len(step_s),
        "examples": alone["examples"],
        "torch_threads": alone["torch_threads"],
        "train_peak_rss_gb": round(alone["peak_rss_mb"] / 1024, 2),
        "train_step_s_first20": round(first, 3),
        "train_step_s_last20": round(last, 3),
        "last_over_first": round(last / first, 3),
        "train_tokens_per_s": round(alone["tokens_per_second"], 1),
        "rss_mb_every_10_steps": alone["step_rss_mb"][9::10],
    }
    if contended is not None:
        summary |= _beside(alone, contended, contended_steps, "train_tokens_per_s_contended", "contended_over_alone")
        summary["contended_peak_rss_gb"] = round(contended["peak_rss_mb"] / 1024, 2)
        summary["contended_threads_per_step"] = contended["step_threads"]
    if packed is not None:
        summary |= _beside(alone, packed, packed_steps, "train_tokens_per_s_packed", "packed_over_padded")
        summary["packed_peak_rss_gb"] = round(packed["peak_rss_mb"] / 1024, 2)
    note = f"{len(step_s)} steps, {alone['examples']} BFCL headline demonstrations, {alone['torch_threads']} threads"
    figures = {
        "train_peak_rss_gb": Figure(median=summary["train_peak_rss_gb"], unit="GB", samples=[], note=note),
        "train_step_s_first20": Figure(median=summary["train_step_s_first20"], unit="s", samples=step_s[:window]),
        "train_step_s_last20": Figure(median=summary["train_step_s_last20"], unit="s", samples=step_s[-window:]),
        "train_tokens_per_s": Figure(median=summary["train_tokens_per_s"], unit="tokens/s", samples=[], note=note),
    }
    if contended is not None:
        figures["train_tokens_per_s_contended"] = Figure(
            median=summary["train_tokens_per_s_contended"], unit="tokens/s", samples=[],
            note=f"first {contended_steps} steps beside a busy loop; {summary['contended_over_alone']}x alone",
        )  # fmt: skip
    if packed is not None:
        figures["train_tokens_per_s_packed"] = Figure(
            median=summary["train_tokens_per_s_packed"], unit="tokens/s", samples=[],
            note=f"first {packed_steps} steps packed, rows of {PACK_WIDTH}; {summary['packed_over_padded']}x padded",
        )  # fmt: skip
    return summary, figures
