"""The training benchmark's figures, from the per-step measurements of its child processes (faked here: the real
run takes ~15 minutes on the real base; `habitloop bench --only training`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import agent.bench.training as training
from agent.config import Settings


def child_run(steps: int, seconds: float, rss: float) -> dict[str, Any]:
    return {
        "examples": 282,
        "step_seconds": [seconds] * 20 + [seconds * 2] * (steps - 20),  # slows down after step 20
        "step_tokens": [1000] * steps,
        "step_rss_mb": [rss] * steps,
        "step_threads": [2] * steps,
        "tokens_per_second": 1000 / seconds,
        "peak_rss_mb": rss,
        "torch_threads": 2,
    }


def test_figures_come_from_the_steps_alone_and_beside_a_busy_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = iter([child_run(60, 2.0, 2048.0), child_run(30, 5.0, 1024.0)])  # alone, then contended
    monkeypatch.setattr(training, "_run_child", lambda settings, steps, pack_width=0: next(runs))
    summary, figures = training.measure_training(Settings(home=tmp_path), steps=60, contended_steps=30, say=print)
    assert summary["train_peak_rss_gb"] == 2.0
    assert summary["train_step_s_first20"] == 2.0 and summary["train_step_s_last20"] == 4.0
    assert summary["last_over_first"] == 2.0
    # the same 30 steps: alone 20 x 2 s + 10 x 4 s = 80 s for 30k tokens; contended 20 x 5 s + 10 x 10 s = 200 s
    assert summary["train_tokens_per_s_contended"] == pytest.approx(150.0)
    assert summary["contended_over_alone"] == pytest.approx(0.4)
    assert summary["contended_threads_per_step"] == [2] * 30  # what FairShare chose, step by step
    assert set(figures) == {
        "train_peak_rss_gb", "train_step_s_first20", "train_step_s_last20", "train_tokens_per_s",
        "train_tokens_per_s_contended",
    }  # fmt: skip


def test_the_packed_run_is_compared_with_the_same_padded_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    widths: list[int] = []

    def fake_child(settings: Settings, steps: int, pack_width: int = 0) -> dict[str, Any]:
        widths.append(pack_width)
        return child_run(steps, 4.0 if pack_width else 2.0, 1024.0)

    monkeypatch.setattr(training, "_run_child", fake_child)
    summary, figures = training.measure_training(
        Settings(home=tmp_path), steps=60, contended_steps=0, packed_steps=25, say=print
    )
    assert widths == [0, training.PACK_WIDTH]  # padded, then packed; no contended run
    # the same 25 steps: padded 20 x 2 s + 5 x 4 s = 60 s; packed 20 x 4 s + 5 x 8 s = 120 s, for 25k tokens each
    assert summary["train_tokens_per_s_packed"] == pytest.approx(208.3, abs=0.1)
    assert summary["packed_over_padded"] == pytest.approx(0.5)
    assert "train_tokens_per_s_packed" in figures and "train_tokens_per_s_contended" not in figures
