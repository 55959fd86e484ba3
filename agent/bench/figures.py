"""What every benchmark reports: a `Figure` (the median of its samples, with the samples), and how to take one.

Its own module so that the runner and the benchmarks it runs (`agent.bench.compose`, `agent.bench.route`) share it
without importing each other.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


class Figure(BaseModel):
    """One measured quantity: the median of `samples` (seconds or milliseconds, as `unit` says)."""

    median: float
    unit: str
    samples: list[float]
    note: str = ""


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of `fn` takes (wall clock)."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def figure(samples: list[float], unit: str, note: str = "") -> Figure:
    """A figure from `samples`; samples are in seconds, reported in milliseconds when `unit` is "ms"."""
    scale = 1000.0 if unit == "ms" else 1.0
    values = [round(s * scale, 4) for s in samples]
    return Figure(median=round(statistics.median(values), 4), unit=unit, samples=values, note=note)


def ratio_figure(numerators: list[float], denominators: list[float]) -> Figure:
    """The per-round ratios of two series measured side by side, and their median: machine drift cancels."""
    ratios = [round(n / d, 3) for n, d in zip(numerators, denominators, strict=True)]
    return Figure(median=round(statistics.median(ratios), 3), unit="x", samples=ratios, note="per-round ratio")
