"""The runtime benchmark (agent.bench.runtime) runs end to end on the tiny base and reports the issue's keys.
Timings are never asserted: only that every figure is there, positive, and the base is left as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from agent.bench.runtime import run_runtime_bench

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def test_the_runtime_benchmark_reports_every_key(fresh_base: Any, tmp_path: Path) -> None:
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = fresh_base.model(input_ids=ids).logits
    summary, figures = run_runtime_bench(fresh_base, tmp_path, resident=(1, 3), peft_loaded=(1, 2), tokens=3, repeats=1)
    for key in ("hot_switch_ms", "cold_load_ms", "slot_copy_ms", "slots_mb"):
        assert set(summary[key]) == {"1", "3"} and all(v > 0 for v in summary[key].values()), key
    for key in ("peft_switch_ms", "peft_load_ms"):
        assert set(summary[key]) == {"1", "2"} and all(v > 0 for v in summary[key].values()), key
    for key in ("mixed_vs_base_batch_ratio", "mixed_vs_single_skill_ratio", "mixed_vs_serial_ratio"):
        assert summary[key] > 0
    assert set(summary["decode_tokens_per_s"]) == {"base", "1_skill", "3_composed"}
    assert summary["mixed_vs_vllm_ratio"] is None and summary["vllm"]["error"], "the tiny base: no folder for vLLM"
    assert "runtime_batch_peft_mixed_seconds" in figures and "runtime_hot_switch_3_resident" in figures
    assert all(not m._forward_hooks for m in fresh_base.model.modules())  # every slot hook removed
    with torch.no_grad():
        assert torch.equal(fresh_base.model(input_ids=ids).logits, before)
