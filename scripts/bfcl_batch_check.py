"""Batched vs one-at-a-time BFCL evaluation on the real base: same verdicts (greedy)? seconds per case each way.

`python scripts/bfcl_batch_check.py [N] [MODE]` (default 16 base-mode test cases); prints one JSON object.
"""

from __future__ import annotations

import json
import sys

from agent.config import Settings
from agent.evals.bfcl.data import load_cases
from agent.evals.bfcl.harness import evaluate
from agent.evals.bfcl.recipe import CATEGORY, bfcl_agent


def main(n: int, mode: str) -> None:
    settings = Settings()
    agent = bfcl_agent(settings)
    cases = load_cases(settings.home, CATEGORY, "test", limit=n)
    batched = evaluate(agent, CATEGORY, "test", mode=mode, cases=cases, batch=8)
    single = evaluate(agent, CATEGORY, "test", mode=mode, cases=cases, batch=1)
    same_verdicts = [a.valid for a in batched.cases] == [b.valid for b in single.cases]
    same_text = sum(a.text == b.text for a, b in zip(batched.cases, single.cases, strict=True))
    print(
        json.dumps(
            {
                "n": n,
                "mode": mode,
                "threads": settings.threads,
                "accuracy_batched": batched.accuracy,
                "accuracy_single": single.accuracy,
                "same_verdicts": same_verdicts,
                "same_text": same_text,
                "seconds_per_case_batched": round(batched.seconds_per_case, 2),
                "seconds_per_case_single": round(single.seconds_per_case, 2),
                "speedup": round(single.seconds_per_case / batched.seconds_per_case, 2),
                "differing": [
                    (a.id, a.text[:80], b.text[:80])
                    for a, b in zip(batched.cases, single.cases, strict=True)
                    if a.text != b.text
                ][:5],
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 16, sys.argv[2] if len(sys.argv) > 2 else "base")
