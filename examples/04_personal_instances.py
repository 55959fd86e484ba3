"""Two users, opposite preferences, one base: each teaches their own instance, consolidation makes it stick.

alice wants every answer as `Answer: ...`; bob wants every answer as a bullet `- ...`. Each shows their agent 10
demonstrations (the same questions, opposite formats). Their episodes stay theirs; `consolidate()` trains each
instance's successes into a personal skill in `$HABITLOOP_HOME/instances/<user>/`. Then both run 6 held-out
questions with their skill and without it: one shared base, one residency, two behaviours. Real base; a few minutes.

    python examples/04_personal_instances.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver

from agent import Agent, Settings, load_base
from agent.runtime import local_runtime
from memory import HashingEmbedder, InMemoryBuffer, Trajectory
from memory.consolidate import ConsolidationConfig
from skills import SkillStore

TRAIN = [
    ("What is the capital of France?", "Paris"),
    ("How many legs does a spider have?", "Eight"),
    ("What colour is a ripe banana?", "Yellow"),
    ("Who wrote Hamlet?", "William Shakespeare"),
    ("What is frozen water called?", "Ice"),
    ("Which planet is known as the red planet?", "Mars"),
    ("What gas do plants breathe in?", "Carbon dioxide"),
    ("How many days are in a week?", "Seven"),
    ("What is the largest mammal?", "The blue whale"),
    ("What do bees make?", "Honey"),
]
HELD_OUT = [
    "What is the capital of Japan?",
    "How many wheels does a bicycle have?",
    "What colour is the sky on a clear day?",
    "Who painted the Mona Lisa?",
    "What is the boiling point of water in Celsius?",
    "Which animal is known as the king of the jungle?",
]
STYLES = {"alice": ("Answer: {}.", "Answer:"), "bob": ("- {}", "- ")}

settings = Settings(home=Path(tempfile.mkdtemp(prefix="habitloop-instances-example-")))
base = load_base(settings=Settings())  # the shared base, converted once in the usual home
shared = SkillStore(settings.skills_dir, base_fingerprint=base.fingerprint)
# One residency for every instance: personal skills load by `alice/...` names into the one shared model's adapter
# slots (HABITLOOP_SLOTS, 16 by default), read through the shared store with the personal stores layered over it.
model = local_runtime(settings, base=base, store=shared, instances_dir=settings.instances_dir, max_hot=4).model
buffer = InMemoryBuffer(HashingEmbedder())
config = ConsolidationConfig(
    kind="preference", min_episodes=4, replay=4, epochs=4.0, min_steps=16, max_steps=16, learning_rate=3e-3
)
agents = {
    user: Agent(settings=settings, instance=user, base=base, model=model, store=shared, buffer=buffer,
                checkpointer=InMemorySaver(), tools=[], max_steps=1, max_new_tokens=24, consolidation=config)
    for user in STYLES
}  # fmt: skip


def share(user: str, skills: list[str]) -> tuple[int, list[str]]:
    """How many held-out answers follow the user's format (runs are discarded so they do not train anything)."""
    results = [agents[user].run(q, skills=skills, examples=0) for q in HELD_OUT]
    buffer.discard([r.run_id for r in results])
    answers = [(r.answer or "").strip() for r in results]
    return sum(a.startswith(STYLES[user][1]) for a in answers), answers


for user, (template, _) in STYLES.items():
    for question, answer in TRAIN:
        agents[user].learn_from(Trajectory.demonstration(question, template.format(answer)))
print({user: len(buffer.list(instance=user)) for user in STYLES}, "demonstrations, each user's own")

skills = {}
for user in STYLES:
    (report,) = agents[user].consolidate(min_episodes=4)
    verdict = "promoted" if report.promoted else "rejected"
    print(f"{user}: personal skill {report.skill!r} revision {report.revision} {verdict} ({report.reason}); "
          f"{len(report.losses)} steps in {report.train_seconds:.0f} s")  # fmt: skip
    skills[user] = report.skill
    assert [m.name for m in agents[user].personal_store().list()] == ([report.skill] if report.promoted else [])

print(f"\nheld-out questions in the user's own format (of {len(HELD_OUT)}):")
for user in STYLES:
    before = share(user, [])[0]
    after, answers = share(user, [skills[user]] if agents[user].personal_store().list() else [])
    print(f"  {user}: base {before}/{len(HELD_OUT)}, with {user}'s skill {after}/{len(HELD_OUT)}; e.g. {answers[0]!r}")
print(f"shared skills: {[m.name for m in shared.list()]} (none: what each user taught stays theirs)")
