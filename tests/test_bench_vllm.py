"""vLLM's side of the runtime benchmark (agent.bench.vllm_cpu): how the child in the vLLM venv is found, asked and
read. vLLM itself is not installed in the test venv; `make vllm-check` and `habitloop bench` run the real one."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.backends.vllm_backend import cpu_environment
from agent.bench.vllm_cpu import measure_in_child, vllm_python


def fake_python(tmp_path: Path, body: str) -> Path:
    """An executable that stands in for the vLLM venv's Python: reads the request, answers as `body` says."""
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\ncat > {tmp_path}/request.json\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_every_core_computes_and_the_kv_cache_is_bounded() -> None:
    assert cpu_environment(2) == {
        "VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "2",
    }  # fmt: skip
    assert cpu_environment(1)["VLLM_CPU_OMP_THREADS_BIND"] == "0"


def test_no_vllm_venv_is_a_reason_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HABITLOOP_VLLM_PYTHON", str(tmp_path / "missing" / "python"))
    assert vllm_python() is None
    result = measure_in_child(tmp_path, [tmp_path], [[1, 2]], tokens=4, repeats=1)
    assert "make vllm-setup" in result["error"]


def test_the_child_gets_the_batch_and_its_last_json_line_is_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = {"seconds": {"mixed": [1.0], "base": [0.5], "single_skill": [0.9], "serial": [4.0]}}
    python = fake_python(tmp_path, f"echo 'INFO a log line'\necho '{json.dumps(answer)}'")
    monkeypatch.setenv("HABITLOOP_VLLM_PYTHON", str(python))
    result = measure_in_child(tmp_path / "base", [tmp_path / "a0", tmp_path / "a1"], [[1, 2], [3]], tokens=4, repeats=2)
    assert result == answer
    request = json.loads((tmp_path / "request.json").read_text())
    assert request == {
        "model": str(tmp_path / "base"), "adapters": [str(tmp_path / "a0"), str(tmp_path / "a1")],
        "prompts": [[1, 2], [3]], "tokens": 4, "repeats": 2,
    }  # fmt: skip


def test_a_failing_child_is_its_last_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = fake_python(tmp_path, "echo 'Traceback' >&2\necho 'RuntimeError: no engine' >&2\nexit 3")
    monkeypatch.setenv("HABITLOOP_VLLM_PYTHON", str(python))
    result = measure_in_child(tmp_path, [tmp_path], [[1]], tokens=4, repeats=1)
    assert result == {"error": "vLLM failed (exit 3): RuntimeError: no engine"}
