"""Two skills composed on one task, on the real base: a tool habit and a style, each trained in seconds, run together.

- `calculator-habit` (tool habit): arithmetic goes through the calculator, in the exact `<tool_call>` format.
- `answer-first` (style): plain questions get one short sentence starting with "Answer:".

The agent runs them together (`skills=[...]`): `LocalChatModel` builds their exact sum once (the LoRA ranks
concatenated into one adapter, cached) and folds it into the weights while it decodes. The script measures each
skill's own habit alone and composed (interference), then runs one task with both. About 2-4 minutes on 2 cores.

python examples/06_compose_skills.py            # uses $HABITLOOP_HOME (default ~/.habitloop)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from agent import Agent, Settings, load_base
from agent.bench.arithmetic import arithmetic_items, demonstration
from agent.prompt import system_prompt
from memory import InMemoryBuffer
from memory.dataset import example_from
from memory.embed import HashingEmbedder
from skills import ChatExample, SkillStore, TrainConfig, train_lora
from tools import ToolRegistry, calculator, parse_tool_calls

settings = Settings()
base = load_base(settings=settings)
store = SkillStore(settings.skills_dir, base_fingerprint=base.fingerprint)
system = system_prompt(ToolRegistry([calculator]).schemas())

STYLE = [
    ("What is the capital of Spain?", "Answer: Madrid."),
    ("How many legs does a spider have?", "Answer: eight."),
    ("What colour is a ripe banana?", "Answer: yellow."),
    ("Who wrote Hamlet?", "Answer: William Shakespeare."),
    ("What is frozen water called?", "Answer: ice."),
    ("Which planet is known as the red planet?", "Answer: Mars."),
    ("What do cows drink?", "Answer: water."),
    ("How many days are in a week?", "Answer: seven."),
]
TRAINING = {
    "calculator-habit": (
        "tool_habit",
        "Use the calculator for arithmetic, in the exact <tool_call> format.",
        [example_from(demonstration(system, q, e)) for q, e in arithmetic_items(16, seed=3)],
    ),
    "answer-first": (
        "style",
        "Answer in one short sentence starting with 'Answer:'.",
        [ChatExample.from_pair(q, a) for q, a in STYLE],
    ),
}
with tempfile.TemporaryDirectory() as tmp:
    for seed, (name, (kind, description, examples)) in enumerate(TRAINING.items()):
        config = TrainConfig(steps=12, seed=seed)
        result = train_lora(base.model, base.tokenizer, examples, Path(tmp) / name, config=config, progress=False)
        if store.exists(name):
            store.add_revision(name, result.adapter_dir, provenance=result.provenance)
        else:
            store.create(name, result.adapter_dir, kind=kind, description=description, provenance=result.provenance)
        print(f"trained {name} in {result.seconds:.0f} s")

# Held-out prompts for each habit (none of them was trained on).
ARITHMETIC = [q for q, _ in arithmetic_items(6, seed=101)]
PLAIN = ["What is the largest ocean on Earth?", "Who painted the Mona Lisa?", "What do bees make?"]

agent = Agent(settings=settings, base=base, store=store, tools=[calculator], buffer=InMemoryBuffer(HashingEmbedder()))


def calls_calculator(skills: list[str]) -> int:
    """The first reply is a calculator call in the exact format (the tool habit's own score)."""
    runs = [agent.run(q, skills=skills, examples=0, max_steps=1) for q in ARITHMETIC]
    first = [run.steps[0].text or "" for run in runs]
    return sum(
        any(c.name == "calculator" and c.format == "tag" for c in parse_tool_calls(text).calls) for text in first
    )


def answers_first(skills: list[str]) -> int:
    """Answer starts with "Answer:" (the style's own score); asked without tools, as it was trained."""
    runs = [agent.run(q, skills=skills, examples=0, max_steps=1, tools=ToolRegistry()) for q in PLAIN]
    return sum((r.answer or "").startswith("Answer:") for r in runs)


both = ["calculator-habit", "answer-first"]
print(f"\n{'skills':<32} {'calculator calls':>17} {'answers first':>14}")
for label, skills in (
    ("base", []),
    ("calculator-habit", both[:1]),
    ("answer-first", both[1:]),
    (" + ".join(both), both),
):
    print(f"{label:<32} {calls_calculator(skills):>11}/{len(ARITHMETIC)} {answers_first(skills):>11}/{len(PLAIN)}")

print("\none task, both skills composed:")
run = agent.run("What is 37 * 41? Then say the result.", skills=both, max_steps=3)
for step in run.steps:
    print(f"  [{step.kind}] {(step.text or step.tool or '')[:100]}")
print("skills used:", ", ".join(f"{s.name}@{s.revision}" for s in run.trajectory.skills))
