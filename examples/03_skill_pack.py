"""A custom skill pack, end to end: a developer builds it, a user installs it in a fresh home and uses it.

The developer has a tool (`examples/stock_tools.py`) and teaches the base to use it from 8 demonstrations (a LoRA
skill, ~12 optimizer steps); `create_pack` puts both into one `.tar.gz`. The user, in an empty `$HABITLOOP_HOME`,
installs it: first without `--trust-code` (the skill arrives, the tool's code stays unimported), then with it, and
runs the agent on questions it was not trained on, with and without the skill. Real base; about 1-2 minutes.

    python examples/03_skill_pack.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from stock_tools import STOCK, stock

from agent import Agent, Settings, load_base
from agent.prompt import system_prompt, tool_result_message
from memory import HashingEmbedder, InMemoryBuffer, Trajectory
from memory.dataset import example_from
from skills import SkillStore, TrainConfig, UserError, train_lora
from skills.packs import create_pack, install_pack, load_pack_tools, remove_pack
from tools import ToolRegistry

HERE = Path(__file__).resolve().parent
base = load_base(settings=Settings())  # the shared base, converted once into the usual home
work = Path(tempfile.mkdtemp(prefix="habitloop-pack-example-"))

# ---- the developer: a skill from 8 demonstrations, and the tool, in one pack
system = system_prompt(ToolRegistry([stock]).schemas())
questions = ["How many {} do we have?", "Are there any {} left?", "Check the stock of {}.", "{} in stock?"]
train_items = ["apples", "pears", "plums", "lemons", "figs", "kiwis", "apples", "plums"]
demos = [
    Trajectory.demonstration(
        questions[i % len(questions)].format(item),
        [
            {"role": "assistant", "content": f'<tool_call>{json.dumps({"name": "stock", "arguments": {"item": item}})}'
             "</tool_call>"},
            tool_result_message("stock", stock.invoke({"item": item}).output or "", ok=True),
            {"role": "assistant", "content": f"We have {STOCK[item]} {item}."},
        ],
        system_prompt=system,
    )
    for i, item in enumerate(train_items)
]  # fmt: skip
dev_store = SkillStore(work / "dev-skills", base_fingerprint=base.fingerprint)
trained = train_lora(
    base.model, base.tokenizer, [example_from(d) for d in demos], work / "adapter", config=TrainConfig(steps=12)
)
dev_store.create("stock-habit", trained.adapter_dir, kind="tool_habit", description="look stock up with the tool")
archive = create_pack(
    "stock-pack",
    ["stock-habit"],
    [f"{HERE / 'stock_tools.py'}:TOOLS"],
    work / "stock-pack.tar.gz",
    store=dev_store,
    description="Answer stock questions by calling the stock tool.",
)
print(f"developer: trained in {trained.seconds:.0f} s; pack {archive.name}, {archive.stat().st_size:,} bytes")

# ---- the user: a fresh home; install, refuse untrusted code, reinstall trusted, use it
user = Settings(home=work / "user-home")
store = SkillStore(user.skills_dir, base_fingerprint=base.fingerprint)
install_pack(archive, store, user.packs_dir)
try:
    load_pack_tools("stock-pack", user.packs_dir)
except UserError as error:
    print(f"untrusted: {error.message[:90]}...")
remove_pack("stock-pack", store, user.packs_dir)
pack = install_pack(archive, store, user.packs_dir, trust_code=True)
print(f"user: installed {pack.manifest.name} (skills {list(pack.created_skills)}, trust_code={pack.trust_code})")

agent = Agent(
    settings=user,
    base=base,
    store=store,
    tools=load_pack_tools("stock-pack", user.packs_dir),
    buffer=InMemoryBuffer(HashingEmbedder()),
    max_steps=3,
    max_new_tokens=48,
)
for question in ("How many dates do we have?", "limes in stock?"):  # items never seen in the demonstrations
    for skills in ([], ["stock-habit"]):
        result = agent.run(question, skills=skills, examples=0)
        calls = [f"{s.tool}({s.arguments})" for s in result.steps if s.kind == "tool_call"]
        print(f"{question!r} skills={skills}: calls {calls or 'none'}; answer {result.answer!r}")
