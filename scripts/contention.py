"""Training and decoding beside one competing CPU-bound process, under the thread settings that matter.

The measurement behind the thread default in docs/training-memory.md. Every cell is a process of its own (its thread
settings are fixed when torch loads): `--steps` training steps on the BFCL headline demonstrations, or greedy decoding
of `--tokens` new tokens, alone / beside a busy Python loop (one core) / beside a second process doing the same work
with the same settings (a second consolidation, or a second agent decoding). Run it on an otherwise quiet machine:

    python scripts/contention.py --out docs/contention.json

A rerun with the same `--out` measures only the cells not yet in it.
`--variants` picks rows (default all): `default` (torch's own choice: 2 threads on 2 cores, idle OpenMP threads
spinning GNU's 300000 iterations before they sleep), `passive` (`OMP_WAIT_POLICY=PASSIVE`: no spin), `active`
(`OMP_WAIT_POLICY=ACTIVE`: spin for ever), `one` (1 thread), `interop1` (`torch.set_num_interop_threads(1)`),
`spin10k` / `spin1k` (`GOMP_SPINCOUNT`), all with the threads pinned to the cores (`HABITLOOP_THREADS`), and `fair`
(nothing pinned: habitloop's default, `FairShare` in skills/threads.py, which training and generation consult
between steps). Rows measured before FairShare existed ran unpinned; pinned to the cores is the same thing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CORES = str(len(os.sched_getaffinity(0)))
VARIANTS: dict[str, dict[str, str]] = {  # HABITLOOP_THREADS pins the threads: FairShare off (skills/threads.py)
    "default": {"OMP_WAIT_POLICY": "", "HABITLOOP_THREADS": CORES, "GOMP_SPINCOUNT": "300000"},  # GNU's own, unset
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "HABITLOOP_THREADS": CORES},
    "active": {"OMP_WAIT_POLICY": "ACTIVE", "HABITLOOP_THREADS": CORES},
    "one": {"OMP_WAIT_POLICY": "", "HABITLOOP_THREADS": "1"},
    "interop1": {"OMP_WAIT_POLICY": "", "HABITLOOP_THREADS": CORES, "CONTENTION_INTEROP": "1"},
    "spin10k": {"OMP_WAIT_POLICY": "", "HABITLOOP_THREADS": CORES, "GOMP_SPINCOUNT": "10000"},
    "spin1k": {"OMP_WAIT_POLICY": "", "HABITLOOP_THREADS": CORES, "GOMP_SPINCOUNT": "1000"},
    "fair": {"OMP_WAIT_POLICY": "", "HABITLOOP_THREADS": ""},  # habitloop's default: FairShare
}

DECODE_CHILD = """
import json, os, time, torch
if os.environ.get("CONTENTION_INTEROP"):
    torch.set_num_interop_threads(int(os.environ["CONTENTION_INTEROP"]))
from agent.base import load_base
base = load_base()
tokens = int(os.environ["CONTENTION_TOKENS"])
ids = base.tokenizer.apply_chat_template(
    [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}],
    add_generation_prompt=True, return_tensors="pt", return_dict=True,
)
from skills.threads import share_cores
def once():
    share_cores()  # as the local backend does before each generation
    started = time.perf_counter()
    with torch.inference_mode():
        base.model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return tokens / (time.perf_counter() - started)
once()  # warm-up
rates = [once() for _ in range(3)]
print("RESULT " + json.dumps({"tokens_per_s": sorted(rates)[1], "threads": torch.get_num_threads()}), flush=True)
"""

TRAIN_CHILD = """
import os, torch
if os.environ.get("CONTENTION_INTEROP"):
    torch.set_num_interop_threads(int(os.environ["CONTENTION_INTEROP"]))
from agent.bench.training import training_child
from agent.config import Settings
training_child(str(Settings().home), int(os.environ["CONTENTION_STEPS"]))
"""  # the training benchmark's own child: it prints one "TRAINING {json}" line


def _env(variant: str, steps: int, tokens: int) -> dict[str, str]:
    env = dict(os.environ, CONTENTION_STEPS=str(steps), CONTENTION_TOKENS=str(tokens))
    for key, value in VARIANTS[variant].items():
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env


def _spawn(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)


def cell(work: str, variant: str, competitor: str, steps: int, tokens: int) -> dict[str, Any]:
    """One measurement: `work` ('train' / 'decode') under `variant`, beside `competitor` ('none' / 'busy' / 'same')."""
    code = TRAIN_CHILD if work == "train" else DECODE_CHILD
    env = _env(variant, steps * 100, tokens * 100) if competitor == "same" else None
    rival: subprocess.Popen[str] | None = None
    if competitor == "busy":
        rival = _spawn("while True: pass", dict(os.environ))
    elif env is not None:  # the same work, endless enough to outlast the measured run
        rival = _spawn(code, env)
        time.sleep(15.0)  # its base loaded, its work under way
    time.sleep(1.0)
    try:
        measured = _spawn(code, _env(variant, steps, tokens))
        out, _ = measured.communicate(timeout=3600)
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()
    prefix = "TRAINING " if work == "train" else "RESULT "
    line = next((line for line in out.splitlines() if line.startswith(prefix)), None)
    if line is None:
        raise SystemExit(f"{work}/{variant}/{competitor} failed (exit {measured.returncode})")
    result = json.loads(line.removeprefix(prefix))
    if work == "train":  # the steps' own rate, without loading and saving
        rate = sum(result["step_tokens"]) / sum(result["step_seconds"])
        result = {"tokens_per_s": rate, "threads": result["torch_threads"]}
    return {"work": work, "variant": variant, "competitor": competitor, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20, help="training steps per cell")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per decode")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--work", default="train,decode")
    parser.add_argument("--competitors", default="none,busy,same")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    done = {(row["work"], row["variant"], row["competitor"]) for row in rows}  # a rerun adds only what is missing
    for work in args.work.split(","):
        for variant in args.variants.split(","):
            for competitor in args.competitors.split(","):
                if (work, variant, competitor) in done:
                    continue
                rows.append(cell(work, variant, competitor, args.steps, args.tokens))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
