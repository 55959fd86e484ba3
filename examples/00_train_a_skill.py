"""Train a skill on the shared base, commit it to the store, and use it. Runs on the real base in ~30 s on 2 cores.

python examples/00_train_a_skill.py            # uses $HABITLOOP_HOME (default ~/.habitloop)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from agent import Settings, load_base
from skills import ChatExample, Residency, SkillStore, TrainConfig, train_lora
from skills.generation import generate

settings = Settings()
base = load_base(settings=settings)  # SmolLM2-135M-Instruct, offline; the first run converts the GGUF once
store = SkillStore(settings.skills_dir, base_fingerprint=base.fingerprint)

# A style skill: answer in exactly one short sentence that starts with "Answer:".
pairs = [
    ("What is the capital of Spain?", "Answer: Madrid."),
    ("How many legs does a spider have?", "Answer: eight."),
    ("What colour is a ripe banana?", "Answer: yellow."),
    ("Who wrote Hamlet?", "Answer: William Shakespeare."),
    ("What is frozen water called?", "Answer: ice."),
    ("Which planet is known as the red planet?", "Answer: Mars."),
    ("What do cows drink?", "Answer: water."),
    ("How many days are in a week?", "Answer: seven."),
]
examples = [ChatExample.from_pair(q, a) for q, a in pairs]

with tempfile.TemporaryDirectory() as tmp:
    result = train_lora(base.model, base.tokenizer, examples, Path(tmp) / "adapter", config=TrainConfig(steps=12))
    if store.exists("answer-first"):
        store.add_revision("answer-first", result.adapter_dir, provenance=result.provenance)
    else:
        store.create(
            "answer-first",
            result.adapter_dir,
            kind="style",
            description="Answer in one short sentence starting with 'Answer:'.",
            provenance=result.provenance,
        )
print(f"trained in {result.seconds:.1f} s, loss {result.losses[0]:.2f} -> {result.losses[-1]:.2f}")

residency = Residency(base.model, store)  # loads skills into one shared PeftModel, bounded and LRU
residency.activate("answer-first")
question = [{"role": "user", "content": "What is the largest ocean on Earth?"}]
print("with the skill:", generate(residency.model, base.tokenizer, [question], max_new_tokens=24)[0])
with residency.base_only() as model:
    print("base alone:   ", generate(model, base.tokenizer, [question], max_new_tokens=24)[0])
for entry in store.history("answer-first"):
    print(f"revision {entry.number}: {entry.status}{' (current)' if entry.current else ''}")
