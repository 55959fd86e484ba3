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


def test_habitloop_bench_reports_the_comparison_under_serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """`habitloop bench --json` carries the before/after serve figures (`serve`), and its table the ratios."""
    import agent.bench.runner as runner
    from agent.config import Settings
    from agent.testing import tiny_base

    asked: list[dict[str, Any]] = []

    def compare(settings: Any, **kw: Any) -> dict[str, Any]:
        asked.append(kw)
        return {"flush": {}, "continuous": {}, "continuous_over_flush": {"requests_per_s": 1.25, "p99_ms": 0.5}}

    monkeypatch.setattr(bench, "compare_batching", compare)
    monkeypatch.setattr(runner, "_base_load", lambda settings, **kw: (tiny_base(), {}))
    settings = Settings(home=tmp_path)
    result = runner.run_bench(settings, only=frozenset({"serve"}), serve_seconds=5, serve_clients=3, progress=False)
    assert asked == [{"clients": 3, "seconds": 5}]
    assert result.serve is not None and result.serve["continuous_over_flush"]["requests_per_s"] == 1.25
    assert "serve continuous/flush requests_per_s 1.25" in str(runner.render_table(result).caption)
    skipped = runner.run_bench(settings, only=frozenset({"serve"}), serve_seconds=None, progress=False)
    assert skipped.serve is None and len(asked) == 1
