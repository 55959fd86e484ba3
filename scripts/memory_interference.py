"""Issue 17's interference check: the shared `tool-habits` skill composed with one user's memory adapter, on BFCL
simple_python (the first 64 test cases), against `tool-habits` alone. Trains `tool-habits` first if the store has
none (the demo's recipe: 32 train demonstrations).

    HABITLOOP_HOME=... python scripts/memory_interference.py [--user customer] [--limit 64]

Prints one JSON object and writes it to reports/memory-interference.json. Each user run's episodes are discarded
by the harness, so no BFCL case ever reaches the user's buffer (it would be learned as something they said).
"""

from __future__ import annotations

import argparse
import json

from agent import Agent, Settings
from agent.evals.bfcl.data import load_cases
from agent.evals.bfcl.harness import evaluate
from agent.evals.bfcl.recipe import CATEGORY, MAX_NEW_TOKENS, SKILL, bfcl_agent, fresh_demonstrations
from agent.evals.memory.data import DEV_SCENARIOS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", default="customer", choices=DEV_SCENARIOS)
    parser.add_argument("--limit", type=int, default=64)
    args = parser.parse_args()
    settings = Settings()
    shared = bfcl_agent(settings)
    if not shared.store.exists(SKILL):
        fresh_demonstrations(shared, load_cases(settings.home, CATEGORY, "train", limit=32))
        shared.consolidate(SKILL)
    user = Agent(
        settings=settings, base=shared.base, instance=args.user, tools=[], max_steps=1, max_new_tokens=MAX_NEW_TOKENS
    )
    alone = evaluate(user, CATEGORY, "test", args.limit, "skill", SKILL)
    composed = evaluate(user, CATEGORY, "test", args.limit, "skill", f"{SKILL}+memory")
    result = {
        "user": args.user,
        "n": alone.n,
        "tool_habits": {"skill": alone.skill, "accuracy": alone.accuracy, "tool_call_rate": alone.tool_call_rate},
        "composed": {"skill": composed.skill, "accuracy": composed.accuracy, "tool_call_rate": composed.tool_call_rate},
        "difference_points": round(100 * (composed.accuracy - alone.accuracy), 1),
    }
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    (settings.reports_dir / "memory-interference.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
