"""The forgetting measurement of issue 17 on BFCL memory: forget one conversation of a dev user, then ask their
questions again with their memory adapter. Questions whose source is only in the forgotten conversation should fall
to the base's accuracy; the others should keep at least 90 % of theirs.

    HABITLOOP_HOME=... python scripts/memory_forget_check.py [--user notetaker] [--conversation ID]

Run after `habitloop practice memory` and `habitloop consolidate --instance USER --facts` (scripts/memory_numbers.sh).
Prints one JSON object and writes it to reports/memory-forget.json.
"""

from __future__ import annotations

import argparse
import json

from agent import Agent, Settings
from agent.evals.memory.data import DEV_SCENARIOS, load_conversations, load_questions, source_conversations
from agent.evals.memory.harness import MemoryEvalReport, evaluate_memory


def accuracy(report: MemoryEvalReport, ids: set[str]) -> dict[str, float | int]:
    chosen = [a for a in report.answers if a.id in ids]
    return {"n": len(chosen), "accuracy": sum(a.correct for a in chosen) / len(chosen) if chosen else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", default="notetaker", choices=DEV_SCENARIOS)
    parser.add_argument("--conversation", default=None, help="default: the user's first conversation")
    args = parser.parse_args()
    settings = Settings()
    agent = Agent(settings=settings, instance=args.user, tools=[], max_steps=1)
    conversations = load_conversations(settings.home, args.user)
    gone = args.conversation or conversations[0].id
    questions = load_questions(settings.home, args.user)
    sources = {q.id: set(source_conversations(q, conversations)) for q in questions}
    only_there = {q for q, s in sources.items() if s == {gone}}
    elsewhere = {q for q, s in sources.items() if s and gone not in s}
    before = {m: evaluate_memory(agent, args.user, m, questions=questions) for m in ("base", "weights")}
    episodes = [t.id for t in agent.buffer.list(instance=args.user) if t.thread_id == gone]
    report = agent.forget(episodes, reason="issue 17 forgetting measurement")
    after = evaluate_memory(agent, args.user, "weights", questions=questions)
    result = {
        "user": args.user,
        "conversation": gone,
        "episodes_forgotten": len(report.episodes),
        "skills": [s.model_dump() for s in report.skills],
        "only_in_forgotten": {
            "base": accuracy(before["base"], only_there),
            "weights_before": accuracy(before["weights"], only_there),
            "weights_after": accuracy(after, only_there),
        },
        "elsewhere": {
            "base": accuracy(before["base"], elsewhere),
            "weights_before": accuracy(before["weights"], elsewhere),
            "weights_after": accuracy(after, elsewhere),
        },
    }
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    (settings.reports_dir / "memory-forget.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
