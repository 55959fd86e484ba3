"""Benchmarks: decoding with composed skills, mixed-skill batches, and residency against plain peft.

Every comparison is measured side by side in one run, alternating A B A B ..., and reported as the median of the
per-round ratios, because this machine's speed drifts with other jobs. Each function leaves the shared base as it
found it (every LoRA layer taken out again).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatRequest
from agent.bench.figures import Figure, figure, ratio_figure, timed
from agent.testing import random_adapter
from skills import Residency, SkillStore
from skills.manifest import LoraSpec

ALL_LINEAR = LoraSpec().target_modules  # what consolidation trains: the realistic shape for decoding
SERVING = ("q_proj", "v_proj")  # the small common serving shape, for stores of 1,000 skills
STORY = "Write a long story about a {}, with many details."
TOPICS = ("dog", "ship", "robot", "garden", "city", "river", "train", "mountain")


def _median_ratio(numerators: list[float], denominators: list[float]) -> float:
    return round(statistics.median(n / d for n, d in zip(numerators, denominators, strict=True)), 3)


def _plain_base(residency: Residency) -> None:
    from peft import PeftModel

    model = residency.model  # restores any merge first
    if isinstance(model, PeftModel):
        model.unload()


def _store(base: Any, root: Path, count: int, targets: tuple[str, ...], prefix: str = "skill") -> SkillStore:
    store = SkillStore(root / f"store-{prefix}-{count}", base_fingerprint=base.fingerprint)
    for index in range(count):
        folder = random_adapter(base, root / f"{prefix}-adapter-{index}", seed=index, target_modules=targets)
        store.create(f"{prefix}-{index:05d}", folder, kind="memory", description=f"benchmark skill {index}")
    return store


def measure_decode(base: Any, root: Path, *, repeats: int, tokens: int) -> tuple[dict[str, Any], float, float]:
    """Decode tokens/s of one conversation: the base alone, 1 skill, 3 skills composed (all-linear r=8 each).

    Returns (figures, composed/base ratio, 1 skill/base ratio). The skills run as `LocalChatModel` runs them:
    folded into the weights for one conversation (`Residency.merged`); the same without merging is reported too.
    """
    import torch

    store = _store(base, root, 3, ALL_LINEAR, prefix="decode")
    residency = Residency(base.model, store, max_hot=8)
    merged = LocalChatModel(base, residency)
    unmerged = LocalChatModel(base, residency, merge_for_decode=False)
    one, three = [("decode-00000", 1)], [(f"decode-{i:05d}", 1) for i in range(3)]
    tokenizer = base.tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": STORY.format("dog")}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)

    def turn(model: LocalChatModel, skills: list[tuple[str, int]], new_tokens: int) -> None:
        with model.activated(skills) as active, torch.inference_mode():
            active.generate(
                **ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip

    def decode(model: LocalChatModel, skills: list[tuple[str, int]]) -> float:
        """Steady-state decode tokens/s of a conversation's turn: a 1-token turn first brings the model to the state
        a conversation with these skills runs in (switched, composed, merged); that switch is measured apart."""
        turn(model, skills, 1)
        turn(model, skills, 1)  # merged from the second turn with the same skills on
        return tokens / timed(partial(turn, model, skills, tokens))

    cases = {
        "base": partial(decode, merged, []),
        "1_skill": partial(decode, merged, one),
        "3_composed": partial(decode, merged, three),
        "1_skill_unmerged": partial(decode, unmerged, one),
        "3_composed_unmerged": partial(decode, unmerged, three),
    }
    for case in cases.values():  # warm up: build the composition, fill caches
        case()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    merge_ms: list[float] = []
    composed_name = merged.adapter_for(three)
    for _ in range(repeats):
        for name, case in cases.items():  # A B C D E, A B C D E, ...: drift hits every case alike
            samples[name].append(case())
        residency.restore()
        merge_ms.append(timed(partial(_enter, residency, composed_name)))
    _plain_base(residency)
    figures = {
        f"decode_tokens_per_s_{name}": figure(values, "tokens/s", f"{tokens} new tokens, batch 1, steady state")
        for name, values in samples.items()
    }
    figures["decode_ratio_3_composed_unmerged"] = ratio_figure(samples["3_composed_unmerged"], samples["base"])
    figures["merge_3_composed"] = figure(
        merge_ms, "ms", "once per conversation: fold the composed adapter into the weights (copy + W += dW)"
    )
    figures["decode_ratio_1_skill"] = ratio_figure(samples["1_skill"], samples["base"])
    return (
        figures,
        _median_ratio(samples["3_composed"], samples["base"]),
        _median_ratio(samples["1_skill"], samples["base"]),
    )


def _enter(residency: Residency, name: str) -> None:
    with residency.merged(name):
        pass


def measure_mixed(
    base: Any, root: Path, *, repeats: int, tokens: int, requests: int = 8
) -> tuple[dict[str, Any], float]:
    """`requests` conversations, each with its own skill: one mixed batch vs one at a time. Returns the speed-up."""
    store = _store(base, root, requests, ALL_LINEAR, prefix="mixed")
    residency = Residency(base.model, store, max_hot=max(8, requests))
    local = LocalChatModel(base, residency, max_batch=requests)
    batch = [
        ChatRequest(
            messages=[{"role": "user", "content": STORY.format(TOPICS[i % len(TOPICS)])}],
            skills=[(f"mixed-{i:05d}", 1)],
            max_new_tokens=tokens,
        )
        for i in range(requests)
    ]
    unmerged = LocalChatModel(base, residency, merge_for_decode=False)
    produced: dict[str, int] = {}

    def serial(model: LocalChatModel, label: str) -> None:
        out = [model.generate(r.messages, skills=r.skills, max_new_tokens=r.max_new_tokens) for r in batch]
        produced[label] = sum(g.completion_tokens for g in out)

    def mixed() -> None:
        produced["mixed"] = sum(g.completion_tokens for g in local.generate_batch(batch))

    runs: dict[str, Callable[[], None]] = {
        "serial_merged": partial(serial, local, "serial_merged"),
        "serial": partial(serial, unmerged, "serial"),
        "mixed": mixed,
    }
    for run in runs.values():  # warm up: every skill hot
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            seconds[name].append(timed(run))
    _plain_base(residency)
    note = f"{requests} requests x {tokens} new tokens, {requests} different all-linear r=8 skills"
    figures = {
        "mixed_batch_seconds": figure(seconds["mixed"], "s", note + f"; {produced['mixed']} tokens"),
        "serial_seconds": figure(seconds["serial"], "s", note + f"; {produced['serial']} tokens, LoRA path"),
        "serial_merged_seconds": figure(
            seconds["serial_merged"], "s", note + f"; {produced['serial_merged']} tokens, merged per request"
        ),
    }
    # against the faster way of going one at a time, round by round
    best_serial = [min(a, b) for a, b in zip(seconds["serial"], seconds["serial_merged"], strict=True)]
    return figures, _median_ratio(best_serial, seconds["mixed"])


def measure_residency_matrix(
    base: Any, root: Path, *, sizes: list[int], hots: list[int], repeats: int
) -> dict[str, Any]:
    """Hot switch and cold load with `sizes` skills in the store and `hots` of them loaded in the model: ours
    (bounded hot set, LRU) against plain peft (`load_adapter` / `set_adapter` with that many adapters loaded)."""

    figures: dict[str, Any] = {}
    template = random_adapter(base, root / "matrix-template", seed=0, target_modules=SERVING)
    for size in sizes:
        store = SkillStore(root / f"matrix-{size}", base_fingerprint=base.fingerprint)
        for index in range(size):
            store.create(f"skill-{index:05d}", template, kind="memory", description=f"benchmark skill {index}")
        names = [f"skill-{index:05d}" for index in range(size)]
        for hot in [h for h in hots if h <= size]:
            residency = Residency(base.model, store, max_hot=hot, max_warm=0)
            for name in names[:hot]:
                residency.activate(name)
            rounds = max(repeats, 2 * hot) if hot > 1 else repeats
            switch = [timed(partial(residency.activate, names[i % hot])) for i in range(rounds)]
            figures[f"hot_switch_{size}_skills_{hot}_hot"] = figure(switch, "ms", "ours: set_adapter among the hot")
            if size > hot:
                cold = []
                for index in range(repeats):
                    name = names[hot + index % (size - hot)]
                    if residency.state(name) == "hot":
                        residency.evict(name)
                    cold.append(timed(partial(residency.activate, name)))
                figures[f"cold_load_{size}_skills_{hot}_hot"] = figure(cold, "ms", "ours: disk -> model, LRU out")
            _plain_base(residency)
    # plain peft: every adapter it was given stays loaded; its calls walk all of them
    for loaded in hots:
        peft_switch, peft_load, _ = plain_peft_switch_and_load(base.model, str(template), loaded, repeats)
        figures[f"peft_switch_{loaded}_loaded"] = peft_switch
        figures[f"peft_load_{loaded}_loaded"] = peft_load
    return figures


def plain_peft_switch_and_load(model: Any, folder: str, loaded: int, repeats: int) -> tuple[Figure, Figure, Any]:
    """Plain peft with `loaded` copies of the adapter in `folder` loaded in `model`: its `set_adapter` and its
    `load_adapter` of one more, and the model unwrapped again (returned: the next measurement wraps it anew)."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, folder, adapter_name="p0")
    for index in range(1, loaded):
        peft_model.load_adapter(folder, adapter_name=f"p{index}")
    rounds = max(repeats, 2 * loaded) if loaded > 1 else repeats
    switch = [timed(partial(peft_model.set_adapter, f"p{i % loaded}")) for i in range(rounds)]
    load = []
    for _ in range(repeats):
        load.append(timed(partial(peft_model.load_adapter, folder, adapter_name="extra")))
        peft_model.set_adapter("p0")
        peft_model.delete_adapter("extra")
    return (
        figure(switch, "ms", "plain peft set_adapter"),
        figure(load, "ms", "plain peft load_adapter from disk"),
        peft_model.unload(),
    )
