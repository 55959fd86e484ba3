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
    monkeypatch.setattr(training, "_run_child", lambda settings, steps: next(runs))
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
