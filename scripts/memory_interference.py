"""Issue 17's interference check: the shared `tool-habits` skill composed with one user's memory adapter, on BFCL
simple_python (the first 64 test cases), against `tool-habits` alone; and the memory adapter's own recall (BFCL
memory, `weights` mode), so what a recipe costs there shows beside what it saves. Trains `tool-habits` first if
the store has none (the demo's recipe: 32 train demonstrations); plays the user's conversations and consolidates
their memory first if they have none, with `--recipe`:

- `plain`: `memory.recipe.facts_recipe()`, the memory adapter trained alone on the base;
- `composed`: the same, trained beneath `tool-habits` (`compose_with`, `memory.composed`), its replay answered by
  base + habit: the off-task prompts and `--replay-cases` simple_python *train* cases (the habit's own tasks).

    HABITLOOP_HOME=... python scripts/memory_interference.py [--user customer] [--limit 64] [--recipe composed]

Prints one JSON object and writes it to reports/memory-interference.json. Each user run's episodes are discarded
by the harness, so no BFCL case ever reaches the user's buffer (it would be learned as something they said). To
compare recipes on one habit, run `plain` in one home, copy its `skills/` into a fresh home, run `composed` there.
"""

from __future__ import annotations

import argparse
import json

from agent import Agent, Settings
from agent.evals.bfcl.data import load_cases
from agent.evals.bfcl.harness import evaluate
from agent.evals.bfcl.practice import task_chats
from agent.evals.bfcl.recipe import CATEGORY, MAX_NEW_TOKENS, SKILL, bfcl_agent, fresh_demonstrations
from agent.evals.memory.data import DEV_SCENARIOS, load_conversations
from agent.evals.memory.harness import evaluate_memory
from agent.evals.memory.play import play_conversations
from memory.recipe import ConsolidationConfig, facts_recipe


def memory_recipe(settings: Settings, recipe: str, replay_cases: int) -> ConsolidationConfig:
    if recipe == "plain":
        return facts_recipe()
    tasks = task_chats(load_cases(settings.home, CATEGORY, "train", limit=replay_cases))
    return facts_recipe(compose_with=[SKILL], composed_replay=tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", default="customer", choices=DEV_SCENARIOS)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--recipe", default="plain", choices=("plain", "composed"))
    parser.add_argument("--replay-cases", type=int, default=32)
    args = parser.parse_args()
    settings = Settings()
    shared = bfcl_agent(settings)
    if not shared.store.exists(SKILL):
        fresh_demonstrations(shared, load_cases(settings.home, CATEGORY, "train", limit=32))
        shared.consolidate(SKILL)
    user = Agent(
        settings=settings, base=shared.base, instance=args.user, tools=[], max_steps=1, max_new_tokens=MAX_NEW_TOKENS,
        consolidation=memory_recipe(settings, args.recipe, args.replay_cases),
    )  # fmt: skip
    consolidation = None
    if not user.skills.exists("memory"):
        play_conversations(user, load_conversations(settings.home, args.user))
        (report,) = user.consolidate(facts=True)
        consolidation = report.model_dump(mode="json", include={"revision", "promoted", "reason", "n_train"})
    recall = evaluate_memory(user, args.user, "weights")
    alone = evaluate(user, CATEGORY, "test", args.limit, "skill", SKILL)
    composed = evaluate(user, CATEGORY, "test", args.limit, "skill", f"{SKILL}+memory")
    result = {
        "user": args.user,
        "recipe": args.recipe,
        "replay_cases": args.replay_cases if args.recipe == "composed" else 0,
        "consolidation": consolidation,
        "memory_weights": {"n": recall.n, "accuracy": recall.accuracy, "control_accuracy": recall.control_accuracy},
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
