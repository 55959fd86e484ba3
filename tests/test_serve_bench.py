"""`habitloop bench-serve --compare-batching`: the same load flushed and continuous, side by side (the load itself
runs the real base in a server process: `habitloop bench-serve`; faked here)."""

from __future__ import annotations

from typing import Any

import pytest

import agent.bench.serve as bench


def load(requests_per_s: float, p50: float, ttft: float, **seen: Any) -> bench.LoadResult:
    return bench.LoadResult(
        clients=16, seconds=30, max_tokens=16, models=["base"], requests=10, ok=10, requests_per_s=requests_per_s,
        p50_ms=p50, p99_ms=2 * p50, ttft_p50_ms=ttft, errors=0, error_samples=[], deleted_skill="s",
        deleted_at_s=15, deleted_skill_404=0, stream_disconnects=3, served_after=True, batching={}, machine=seen,
    )  # fmt: skip


def test_both_runs_use_the_same_slots_and_the_ratios_compare_them(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bool | None, int | None]] = []

    def fake(settings: Any, *, continuous: bool | None = None, slots: int | None = None, **kw: Any) -> Any:
        calls.append((continuous, slots))
        return load(4.0, 2000.0, 900.0) if continuous else load(2.0, 4000.0, 3000.0)

    monkeypatch.setattr(bench, "run_load", fake)
    result = bench.compare_batching(None, slots=8, clients=16, seconds=30)
    assert calls == [(False, 8), (True, 8)]
    assert result["continuous_over_flush"] == {
        "requests_per_s": 2.0, "p50_ms": 0.5, "p99_ms": 0.5, "ttft_p50_ms": 0.3
    }  # fmt: skip
