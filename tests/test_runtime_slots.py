"""Adapter slots (skills.runtime): every adapter shape the store allows computes what peft computes (fp32,
allclose), alone, mixed in one batch, summed per row and through `generate`; the base stays untouched; the LRU,
pinning and growth keep every resident adapter intact; misfits are refused with nothing half loaded."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel

from agent.testing import random_adapter, tiny_base
from skills import (
    AdapterMisfitError,
    AdapterSlots,
    AdapterWeights,
    InvalidAdapterError,
    SkillStore,
    SlotsFullError,
    UserError,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]
QV = ("q_proj", "v_proj")
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# rows of one length, so a batch needs no padding and every row can be compared with a batch of one
PROMPTS = ("hello there", "ping pong!!", "what is 2+2", "a red ship.", "call a tool")
Make = Callable[..., AdapterWeights]


@pytest.fixture
def make(tmp_path: Path, tiny: Any) -> Make:
    """A random adapter of the given shape, stored as a skill and read back as the runtime gets it."""
    store = SkillStore(tmp_path / "skills", base_fingerprint=tiny.fingerprint)
    counter = iter(range(1000))

    def make(r: int = 8, targets: tuple[str, ...] = QV, *, seed: int | None = None, **config: Any) -> AdapterWeights:
        index = next(counter)
        folder = random_adapter(tiny, tmp_path / f"adapter-{index}", seed=index if seed is None else seed, r=r,
                                target_modules=targets, std=0.05)  # fmt: skip
        if config:  # e.g. use_rslora, alpha_pattern: options the store allows, written as peft would
            path = folder / "adapter_config.json"
            path.write_text(json.dumps(json.loads(path.read_text()) | config))
        store.create(f"s{index}", folder, kind="style")
        return store.read_adapter(f"s{index}")

    return make


@pytest.fixture
def slots() -> Iterator[AdapterSlots]:
    runtime = AdapterSlots(tiny_base().model, capacity=16, r_max=64)
    yield runtime
    runtime.close()


def ids(tiny: Any, prompts: tuple[str, ...] = PROMPTS) -> torch.Tensor:
    rows = [tiny.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert len({len(row) for row in rows}) == 1, "test prompts must have one length"
    return torch.tensor(rows)  # (b, t)


@torch.no_grad()
def logits(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids).logits  # (b, t, vocab)


def peft_logits(weights: list[AdapterWeights], input_ids: torch.Tensor) -> torch.Tensor:
    """peft's own output with `weights` loaded on a fresh copy of the base and active together (one: alone)."""
    model = PeftModel.from_pretrained(tiny_base().model, str(weights[0].path), adapter_name="p0")
    for index, extra in enumerate(weights[1:], start=1):
        model.load_adapter(str(extra.path), adapter_name=f"p{index}")
    model.base_model.set_adapter([f"p{i}" for i in range(len(weights))])
    model.eval()
    return logits(model, input_ids)


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ equivalence


@pytest.mark.parametrize("targets", [QV, ALL], ids=["qv", "all_linear"])
@pytest.mark.parametrize("r", [1, 4, 8, 64])
def test_every_rank_and_target_set_matches_peft(
    slots: AdapterSlots, make: Make, tiny: Any, r: int, targets: Any
) -> None:
    weights = make(r, targets)
    slots.load("a", weights)
    x = ids(tiny)
    with slots.using([["a"]] * len(PROMPTS)):
        got = logits(slots.model, x)
    want = peft_logits([weights], x)
    assert not torch.allclose(want, logits(tiny.model, x), atol=1e-3), "the adapter must visibly change the output"
    assert_close(got, want)


def test_rslora_and_alpha_pattern_scale_as_peft_does(slots: AdapterSlots, make: Make, tiny: Any) -> None:
    x = ids(tiny)
    for key, weights in {
        "rs": make(16, ALL, use_rslora=True),
        "pattern": make(8, QV, alpha_pattern={"v_proj": 3}),
    }.items():
        slots.load(key, weights)
        with slots.using([[key]] * len(PROMPTS)):
            got = logits(slots.model, x)
        assert_close(got, peft_logits([weights], x))


def test_a_mixed_batch_gives_each_row_its_own_adapter_and_base_rows_the_base(
    slots: AdapterSlots, make: Make, tiny: Any
) -> None:
    shapes = {"r1qv": (1, QV), "r8all": (8, ALL), "r64all": (64, ALL), "r4qv": (4, QV)}
    weights = {key: make(r, targets) for key, (r, targets) in shapes.items()}
    for key, adapter in weights.items():
        slots.load(key, adapter)
    x = ids(tiny)
    rows: list[list[str]] = [["r1qv"], ["r8all"], [], ["r64all"], ["r4qv"]]
    with slots.using(rows):
        got = logits(slots.model, x)
    base = logits(tiny.model, x)
    for i, row in enumerate(rows):
        if row:
            assert_close(got[i], peft_logits([weights[row[0]]], x[i : i + 1])[0])
        else:
            assert torch.equal(got[i], base[i])  # a zero update adds exactly nothing


def test_several_slots_in_a_row_are_peft_summing_those_adapters(slots: AdapterSlots, make: Make, tiny: Any) -> None:
    weights = {"a": make(8, QV), "b": make(4, ALL), "c": make(64, ALL)}
    for key, adapter in weights.items():
        slots.load(key, adapter)
    x = ids(tiny)[:4]
    rows: list[list[str]] = [["a", "b"], ["c"], ["a", "b", "c"], []]
    with slots.using(rows):
        got = logits(slots.model, x)
    for i, row in enumerate(rows[:3]):
        assert_close(got[i], peft_logits([weights[k] for k in row], x[i : i + 1])[0])
    with slots.using([["b", "a"]] * 4):  # every row the same composition: the uniform path, in another order
        assert_close(logits(slots.model, x), peft_logits([weights["a"], weights["b"]], x))


def test_generate_greedy_matches_peft_mixed_batch_row_for_row(slots: AdapterSlots, make: Make, tiny: Any) -> None:
    weights = {"a": make(8, ALL), "b": make(1, QV), "c": make(64, ALL)}
    for key, adapter in weights.items():
        slots.load(key, adapter)
    prompts = ["<|im_start|>user\nhi<|im_end|>\n", "<|im_start|>user\na longer question<|im_end|>\n", "x", "yo yo"]
    batch = tiny.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    options = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tiny.tokenizer.pad_token_id}
    with slots.using([["a"], ["b"], [], ["c"]]), torch.inference_mode():
        got = slots.model.generate(**batch, **options)
    reference = PeftModel.from_pretrained(tiny_base().model, str(weights["a"].path), adapter_name="a")
    for key in ("b", "c"):
        reference.load_adapter(str(weights[key].path), adapter_name=key)
    reference.eval()
    with torch.inference_mode():
        want = reference.generate(**batch, **options, adapter_names=["a", "b", "__base__", "c"])
    assert torch.equal(got, want)
    with torch.inference_mode():
        base_only = tiny.model.generate(**batch, **options)
    assert not torch.equal(got, base_only)


# ------------------------------------------------------------------------------------------------ the base path


def test_without_a_selection_the_base_is_untouched_and_close_removes_every_hook(make: Make, tiny: Any) -> None:
    model = tiny_base().model
    runtime = AdapterSlots(model, capacity=4)
    x = ids(tiny)
    runtime.load("a", make(8, ALL))
    assert torch.equal(logits(model, x), logits(tiny.model, x))
    with runtime.using([[]] * len(PROMPTS)):  # every row the base: nothing selected
        assert torch.equal(logits(model, x), logits(tiny.model, x))
    runtime.close()
    assert all(not m._forward_hooks for m in model.modules())
    assert runtime.resident() == []


def test_peft_still_wraps_the_slotted_base(make: Make, tiny: Any) -> None:
    weights = make(8, QV)
    model = tiny_base().model
    runtime = AdapterSlots(model, capacity=2)
    runtime.load("a", weights)
    peft_model = PeftModel.from_pretrained(model, str(weights.path), adapter_name="p")  # hooks stay on base layers
    x = ids(tiny)
    assert_close(logits(peft_model, x), peft_logits([weights], x))
    with runtime.using([["a"]] * len(PROMPTS)):  # both paths add: peft's adapter and the slot's, the same update
        doubled = logits(peft_model, x)
    assert_close(doubled, peft_logits([weights, weights], x))
    runtime.close()


def test_slots_fit_a_base_that_peft_wrapped_first(make: Make, tiny: Any) -> None:
    weights, other = make(8, ALL), make(4, QV)
    model = tiny_base().model
    peft_model = PeftModel.from_pretrained(model, str(other.path), adapter_name="p")  # wraps `model` in place
    runtime = AdapterSlots(model, capacity=2)  # the plain model object, its Linears now peft's base layers
    runtime.load("a", weights)
    x = ids(tiny)
    with peft_model.disable_adapter(), runtime.using([["a"]] * len(PROMPTS)):
        assert_close(logits(peft_model, x), peft_logits([weights], x))
    runtime.close()


def test_stacks_exist_only_for_targeted_modules(slots: AdapterSlots, make: Make, tiny: Any) -> None:
    slots.load("a", make(8, QV))
    layers = tiny.model.config.num_hidden_layers
    assert sorted(slots._stacks) == sorted(f"model.layers.{i}.self_attn.{m}" for i in range(layers) for m in QV)
    hidden, kv = tiny.model.config.hidden_size, slots._linears["model.layers.0.self_attn.v_proj"].out_features
    per_slot = layers * 8 * ((hidden + hidden) + (hidden + kv))  # q: A r x h + B h x r; v: A r x h + B kv x r
    assert slots.nbytes() == 4 * per_slot * (1 + 8)  # the zero slot + the first 8 slots allocated, fp32


# ------------------------------------------------------------------------------------------------ residency


def test_lru_evicts_the_least_recent_and_a_reused_slot_keeps_nothing_of_its_last_adapter(make: Make, tiny: Any) -> None:
    runtime = AdapterSlots(tiny_base().model, capacity=2)
    wide, narrow, third = make(8, ALL), make(8, QV), make(4, QV)
    first = runtime.load("wide", wide)
    runtime.load("narrow", narrow)
    runtime.load("narrow", narrow)  # a hit: most recent now, nothing copied
    assert runtime.resident() == ["wide", "narrow"]
    assert runtime.load("third", third) == first  # "wide" was the least recent: its slot is reused
    assert runtime.slot_of("wide") is None and runtime.resident() == ["narrow", "third"]
    x = ids(tiny)
    with runtime.using([["third"]] * len(PROMPTS)):  # no leftovers of "wide" in the MLP or k/o stacks
        assert_close(logits(runtime.model, x), peft_logits([third], x))
    runtime.close()


def test_pinned_adapters_are_never_evicted_and_all_pinned_is_refused(make: Make) -> None:
    runtime = AdapterSlots(tiny_base().model, capacity=2)
    a, b, c = make(4), make(4), make(4)
    runtime.load("a", a)
    runtime.load("b", b)
    runtime.pin("a")
    runtime.load("a", a)  # a is the most recent, but pinned anyway
    runtime.load("c", c)
    assert runtime.resident() == ["a", "c"]
    runtime.pin("c")
    with pytest.raises(SlotsFullError, match="pinned"):
        runtime.load("b", b)
    with pytest.raises(UserError, match="pinned"):
        runtime.unload("c")
    runtime.unpin("c")
    runtime.unload("c")
    assert runtime.resident() == ["a"] and runtime.pinned() == ["a"]
    with pytest.raises(UserError, match="not resident"):
        runtime.pin("zzz")
    runtime.close()


def test_keys_in_use_are_pinned_for_the_block(make: Make, tiny: Any) -> None:
    runtime = AdapterSlots(tiny_base().model, capacity=1)
    runtime.load("a", make(4))
    with runtime.using([["a"]]):
        with pytest.raises(SlotsFullError):
            runtime.load("b", make(4))
        with pytest.raises(UserError, match="already selected"):
            with runtime.using([["a"]]):
                pass
    assert runtime.pinned() == []
    with pytest.raises(UserError, match="not resident"), runtime.using([["nope"]]):
        pass
    runtime.close()


def test_growing_past_the_first_allocation_keeps_every_adapter(make: Make, tiny: Any) -> None:
    runtime = AdapterSlots(tiny_base().model, capacity=20, r_max=16)
    adapters = [make(r, QV) for r in [1, 2, 4, 8, 16, 8, 8, 8, 8, 8, 4, 2]]  # ranks grow, then slots grow
    for index, weights in enumerate(adapters):
        runtime.load(index, weights)
    stack = next(iter(runtime._stacks.values()))
    assert stack.slots == 18 and stack.rank == 16  # 1 + 8 slots, doubled once (capacity caps it at 21)
    x = ids(tiny)[:2]
    with runtime.using([[0], [11]]):
        got = logits(runtime.model, x)
    assert_close(got[0], peft_logits([adapters[0]], x[:1])[0])
    assert_close(got[1], peft_logits([adapters[11]], x[1:])[0])
    runtime.close()


def test_a_batch_of_another_size_than_selected_is_a_clear_error(slots: AdapterSlots, make: Make, tiny: Any) -> None:
    slots.load("a", make(4))
    slots.load("b", make(4))
    with slots.using([["a"], ["b"]]), pytest.raises(ValueError, match="set for 2 rows"):
        logits(slots.model, ids(tiny)[:3])


# ------------------------------------------------------------------------------------------------ refusals


def replaced(weights: AdapterWeights, **changes: Any) -> AdapterWeights:
    return dataclasses.replace(weights, **changes)


def test_misfits_are_refused_and_nothing_is_half_loaded(make: Make, tiny: Any) -> None:
    runtime = AdapterSlots(tiny_base().model, capacity=4, r_max=8)
    kept = make(8, QV)
    runtime.load("kept", kept)
    x = ids(tiny)
    with runtime.using([["kept"]] * len(PROMPTS)):
        before = logits(runtime.model, x)
    size = runtime.nbytes()
    good = make(8, ALL)
    last_a = sorted(k for k in good.tensors if k.endswith("lora_A.weight"))[-1]  # found last: the rest was fine
    wide = {k: v for k, v in good.tensors.items()}
    wide[last_a] = torch.zeros(8, wide[last_a].shape[1] + 1)
    dropped = {k: v for k, v in good.tensors.items() if ".0.mlp.up_proj." not in k}
    one_half = {k: v for k, v in good.tensors.items() if not k.endswith("0.mlp.up_proj.lora_B.weight")}
    foreign = good.tensors | {"base_model.model.model.layers.0.mlp.up_proj.weight": torch.zeros(128, 64)}
    cases: list[tuple[AdapterWeights, type[Exception], str]] = [
        (make(16, QV), AdapterMisfitError, "above r_max=8"),
        (replaced(good, tensors=wide), AdapterMisfitError, "this base needs"),
        (replaced(good, tensors=dropped), AdapterMisfitError, "has no lora_A/lora_B"),
        (replaced(good, tensors=one_half), InvalidAdapterError, "no lora_B"),
        (replaced(good, tensors=foreign), InvalidAdapterError, "not a lora_A/lora_B weight"),
        (replaced(good, config=good.config | {"use_dora": True}), AdapterMisfitError, "DoRA"),
        (replaced(good, config=good.config | {"fan_in_fan_out": True}), AdapterMisfitError, "fan_in_fan_out"),
        (replaced(good, config=good.config | {"target_modules": ["lm_head"]}), InvalidAdapterError, "not in target"),
    ]
    for index, (weights, error, text) in enumerate(cases):
        with pytest.raises(error, match=text) as raised:
            runtime.load(f"bad{index}", weights)
        assert "\n" not in str(raised.value)
        assert runtime.resident() == ["kept"] and runtime.nbytes() == size
    with runtime.using([["kept"]] * len(PROMPTS)):
        assert torch.equal(logits(runtime.model, x), before)
    runtime.load("good", good)  # and the slot the refusals did not take is free for a good one
    assert runtime.resident() == ["kept", "good"]
    runtime.close()


def test_a_peft_model_is_refused(tiny: Any, make: Make) -> None:
    with pytest.raises(UserError, match="plain base model"):
        AdapterSlots(PeftModel.from_pretrained(tiny_base().model, str(make().path)))
