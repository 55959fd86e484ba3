"""A user tells the agent about themselves; consolidation moves it into their own adapter; then they forget a part.

maya tells her agent a few things, one short conversation each. `consolidate(facts=True)` turns what she said into
self-study question/answer pairs (the base writes a question about each sentence; the answer is her sentence) and
trains her memory adapter (`maya/memory`). Her questions are then asked cold: a fresh thread, nothing in the prompt
but the question, with the adapter and without it. Finally `forget(match="dog")` removes the turn about her dog from the
buffer and from the weights: the revision that held it is deleted and rebuilt from the rest. Real base; a few minutes.

    python examples/05_personal_memory.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from agent import Agent, Settings, load_base
from memory.recipe import facts_recipe

TOLD = [
    "Hi! My name is Maya Okafor and I live in Leeds.",
    "My dog is called Biscuit. He is a beagle and he loves the park.",
    "I work as a nurse at St James's hospital, mostly night shifts.",
    "My favourite food is jollof rice, and I am allergic to peanuts.",
]
ASKED = [
    "What is my name?",
    "What is my dog called?",
    "Where do I work?",
    "What am I allergic to?",
]

settings = Settings(home=Path(tempfile.mkdtemp(prefix="habitloop-memory-example-")))
base = load_base(settings=Settings())  # the shared base, converted once in the usual home
agent = Agent(
    settings=settings, base=base, instance="maya", tools=[], max_steps=1, max_new_tokens=32,
    consolidation=facts_recipe(max_steps=60, learning_rate=2e-3),
)  # fmt: skip
for index, turn in enumerate(TOLD):  # recorded in maya's buffer as any conversation is (one thread each here:
    agent.run(turn, thread_id=f"about-me-{index}", examples=0)  # forgetting a turn deletes its whole thread)
print(f"maya told the agent {len(TOLD)} things; waiting in her buffer: {agent.buffer.stats(instance='maya').total}")

(report,) = agent.consolidate(facts=True)
print(f"consolidated into maya/{report.skill}@{report.revision}: {report.reason}")


def ask(label: str, skills: list[str]) -> None:
    for question in ASKED:  # a fresh thread each time: nothing of the conversation is in the prompt
        answer = agent.run(question, skills=skills, examples=0).answer or ""
        print(f"  [{label}] {question} -> {answer.strip()[:90]!r}")


ask("base", [])
ask("memory", ["memory"])

forgotten = agent.forget(match="dog", reason="maya asked")
(skill,) = forgotten.skills
print(
    f"forgot {len(forgotten.episodes)} episode(s) and thread(s) {forgotten.threads}; revisions deleted "
    f"{skill.revisions_deleted}, rebuilt as revision {skill.new_revision} on {len(skill.retrained_on)} remaining turns"
)
history = agent.personal_store().history("memory")
print("history:", [(entry.number, entry.status) for entry in history])
ask("memory after forget", ["memory"])
