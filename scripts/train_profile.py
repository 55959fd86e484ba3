"""Profile `train_lora` on the BFCL headline demonstrations: per-step seconds, RSS and glibc's heap figures.

The measurement behind docs/training-memory.md. One variant per process (run them one or two at a time, one thread
each, on 2 cores), e.g.:

    python scripts/train_profile.py --steps 100 --pad 1 --no-trim --out before.json  # every batch its own width
    python scripts/train_profile.py --steps 60 --pad 32 --no-trim --out pad32.json   # widths rounded up to 32
    python scripts/train_profile.py --steps 60 --pad 1 --out trim.json               # malloc_trim after each step
    python scripts/train_profile.py --steps 200 --out after.json                     # both (the default now)
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=0 python scripts/train_profile.py --pad 1 --no-trim ...  # oneDNN keeps no kernels
    python scripts/train_profile.py --mmap 131072 --pad 1 --no-trim ...  # glibc: mmap every block over 128 KB

`heap_used_mb` is what malloc has handed out and not had back (mallinfo2 uordblks); `heap_free_mb` what it holds
free in its arenas (fordblks; after a trim those pages are no longer resident, so compare `rss_mb`).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

import skills.train as training
from agent.base import load_base
from agent.bench.training import headline_examples, rss_mb
from agent.config import Settings
from skills.train import TrainConfig, train_lora

M_MMAP_THRESHOLD = -3


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pad", type=int, default=32, help="TrainConfig.pad_to_multiple")
    parser.add_argument("--no-trim", action="store_true", help="skip train_lora's per-step malloc_trim")
    parser.add_argument("--no-checkpointing", action="store_true", help="as the BFCL recipe trains")
    parser.add_argument("--mmap", type=int, default=0, help="mallopt(M_MMAP_THRESHOLD, bytes)")
    args = parser.parse_args()

    import torch

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    if args.mmap:
        libc.mallopt(M_MMAP_THRESHOLD, args.mmap)
    if args.no_trim:
        training.return_free_heap = lambda: None
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings()
    base = load_base(settings=settings)
    examples = headline_examples(settings)
    rows: list[dict[str, Any]] = []

    def on_step(step: int, loss: float) -> None:
        heap = libc.mallinfo2()
        rows.append(
            {
                "step": step,
                "rss_mb": round(rss_mb(), 1),
                "heap_used_mb": round(heap.uordblks / 2**20, 1),
                "heap_free_mb": round(heap.fordblks / 2**20, 1),
                "loss": round(loss, 3),
            }
        )
        if step % 10 == 0:
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    config = TrainConfig(steps=args.steps, pad_to_multiple=args.pad, gradient_checkpointing=not args.no_checkpointing)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_lora(base.model, base.tokenizer, examples, Path(tmp), config=config, on_step=on_step)
    for row, seconds in zip(rows, result.step_seconds, strict=True):
        row["s"] = seconds
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "tokens_per_s": result.tokens_per_second,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
    }
    args.out.write_text(json.dumps(summary) + "\n")
    print(f"{result.tokens_per_second:.0f} tokens/s, peak {summary['peak_rss_mb']:.0f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
