"""Train the built-in `calculator-habit` pack on the real base, measure it, and write it to skills/packs/builtin/.

The habit: for arithmetic, call the calculator in the exact format
`<tool_call>{"name": "calculator", "arguments": {"expression": "..."}}</tool_call>`, read the result, answer; for
anything else, answer as the base would. Anyone can rerun this (about 5 minutes on 2 CPU cores):

    python examples/build_calculator_pack.py                      # rewrites skills/packs/builtin/calculator-habit/
    python examples/build_calculator_pack.py -o /tmp/calc-pack    # somewhere else

The data comes from `agent.bench.arithmetic`: demonstrations of the whole loop on arithmetic questions, plus the
base's own answers to unrelated prompts (replay, so the habit does not leak into every answer). The measured
effect (held-out prompts, before and after) goes into the pack's description and its skill's evaluation record.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from agent import Settings, load_base
from agent.bench.arithmetic import arithmetic_items, demonstration
from agent.prompt import system_prompt
from memory.dataset import example_from
from memory.offtask import OFF_TASK_EVAL, OFF_TASK_TRAIN
from skills import ChatExample, Evaluation, LoraSpec, Residency, SkillStore, TrainConfig, train_lora
from skills.generation import generate
from skills.packs import PackTask, TaskChecker, create_pack
from tools import ToolRegistry, calculator, parse_tool_calls

NAME = "calculator-habit"
# The recipe the README reports: 12 replay answers, tool calls counted on 6 unrelated prompts.
REPLAY = OFF_TASK_TRAIN[:12]
OFF_TASK = OFF_TASK_EVAL[:6]
ROOT = Path(__file__).resolve().parents[1]
# Rank 4 on the attention query and value projections: ~0.9 MB of fp32 weights, enough for a format habit.
LORA = LoraSpec(r=4, alpha=8, target_modules=("q_proj", "v_proj"))
CONFIG = TrainConfig(lora=LORA, steps=20, batch_size=4, learning_rate=2e-3, seed=0)
SYSTEM = system_prompt(ToolRegistry([calculator]).schemas()) or ""


def exact_call(text: str, expression: str) -> bool:
    """The reply is one tagged calculator call, nothing else, whose expression evaluates to the expected value."""
    parsed = parse_tool_calls(text, tool_names={"calculator"})
    if len(parsed.calls) != 1 or parsed.errors or parsed.text_outside:
        return False
    call = parsed.calls[0]
    if call.format != "tag" or call.name != "calculator" or set(call.arguments) != {"expression"}:
        return False
    return calculator(str(call.arguments["expression"])) == calculator(expression)


def chat(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def measure(model: Any, tokenizer: Any, held_out: list[tuple[str, str]]) -> dict[str, float]:
    """First replies to held-out arithmetic (share of exact calls) and to unrelated prompts (share with any call)."""
    replies = generate(model, tokenizer, [chat(q) for q, _ in held_out], max_new_tokens=40)
    off = generate(model, tokenizer, [chat(q) for q in OFF_TASK], max_new_tokens=40)
    return {
        "exact_call_rate": round(sum(map(exact_call, replies, (e for _, e in held_out))) / len(held_out), 3),
        "off_task_call_rate": round(
            sum(parse_tool_calls(r, tool_names={"calculator"}).attempted for r in off) / len(off), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "skills" / "packs" / "builtin" / NAME)
    args = parser.parse_args()
    settings = Settings()
    base = load_base(settings=settings)
    items = arithmetic_items(44, seed=7)
    train_items, held_out = items[:32], items[32:]  # 12 held-out questions, never trained on
    examples = [example_from(demonstration(SYSTEM, q, e)) for q, e in train_items]
    # Replay: the base's own first answers to unrelated prompts, so the habit stays with arithmetic.
    replay = generate(base.model, base.tokenizer, [chat(q) for q in REPLAY], max_new_tokens=48)
    examples += [ChatExample.from_pair(q, a, system=SYSTEM) for q, a in zip(REPLAY, replay, strict=True)]
    print(f"{len(examples)} examples: {len(train_items)} demonstrations + {len(replay)} replay answers", flush=True)
    before = measure(base.model, base.tokenizer, held_out)
    print("base alone:", before, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_lora(base.model, base.tokenizer, examples, Path(tmp) / "adapter", config=CONFIG)
        print(f"trained {result.steps} steps in {result.seconds:.0f} s, loss {result.losses[0]:.3f} -> "
              f"{result.losses[-1]:.3f}", flush=True)  # fmt: skip
        store = SkillStore(Path(tmp) / "skills", base_fingerprint=base.fingerprint)
        store.create(NAME, result.adapter_dir, kind="tool_habit", provenance=result.provenance)
        residency = Residency(base.model, store, max_hot=1)
        residency.activate(NAME)
        after = measure(residency.model, base.tokenizer, held_out)
        print("with the skill:", after, flush=True)
        effect = (
            f"Measured on {len(held_out)} held-out arithmetic questions (first reply is exactly one "
            f"<tool_call> to the calculator with a correct expression): base {before['exact_call_rate']:.0%}, "
            f"with the skill {after['exact_call_rate']:.0%}; tool calls on {len(OFF_TASK)} unrelated prompts: "
            f"base {before['off_task_call_rate']:.0%}, with the skill {after['off_task_call_rate']:.0%}."
        )
        description = (
            "For arithmetic, call the calculator in the exact format "
            '<tool_call>{"name": "calculator", "arguments": {"expression": "..."}}</tool_call>, read the result, '
            f"answer; anything else is answered as the base would. {effect} "
            f"LoRA r={LORA.r} on {', '.join(LORA.target_modules)}, {result.steps} steps on {len(train_items)} "
            "demonstrations + replay (examples/build_calculator_pack.py)."
        )
        # The skill's own record carries the numbers too (a new store revision with the evaluation attached).
        final = SkillStore(Path(tmp) / "final", base_fingerprint=base.fingerprint)
        final.create(
            NAME,
            result.adapter_dir,
            kind="tool_habit",
            description=description[:2000],
            provenance=result.provenance,
            evaluation=Evaluation(
                metrics={f"base_{k}": v for k, v in before.items()} | {f"skill_{k}": v for k, v in after.items()},
                details={"held_out": [q for q, _ in held_out], "off_task": list(OFF_TASK)},
            ),
        )
        residency.model.unload()
        tasks = [
            PackTask(prompt=q, checker=TaskChecker(kind="contains", value=calculator(e))) for q, e in held_out[:3]
        ] + [PackTask(prompt=held_out[3][0], checker=TaskChecker(kind="tool_call", value="calculator"))]
        if args.output.exists():
            shutil.rmtree(args.output)
        create_pack(NAME, [NAME], [], args.output, store=final, version="1.0.0", description=description, tasks=tasks)
    print(json.dumps({"before": before, "after": after, "pack": str(args.output)}, indent=2))


if __name__ == "__main__":
    main()
