"""Composition: exact sums, peft's weighted methods, caching, materialization, refusals, and what summing does to
two memorised skills on the tiny model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from pydantic import ValidationError

from agent.testing import tiny_base
from skills import (
    BaseMismatchError,
    ChatExample,
    LoraSpec,
    Residency,
    SkillStore,
    TrainConfig,
    UserError,
    train_lora,
)
from skills.compose import (
    ComponentSpec,
    Composer,
    CompositionSpec,
    composition_methods,
    register_composition_method,
)
from skills.generation import generate

# peft.from_pretrained asks transformers a deprecated question; not ours to fix
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]
PROBE = "<|im_start|>user\nping<|im_end|>\n<|im_start|>assistant\npo"
Adapter = Callable[[str], Path]


@torch.no_grad()
def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits  # (1, seq, vocab)


@pytest.fixture
def ids(tiny: Any) -> torch.Tensor:
    return torch.tensor([tiny.tokenizer(PROBE, add_special_tokens=False)["input_ids"]])  # (1, seq)


@pytest.fixture
def skills_ab(store: SkillStore, adapter: Adapter) -> SkillStore:
    """Skills a and b: two different adapters of the same shape (r=8, all linear layers)."""
    store.create("a", adapter("alpha"), kind="style")
    store.create("b", adapter("beta"), kind="style")
    return store


@pytest.fixture
def composer(skills_ab: SkillStore, fresh_base: Any) -> Composer:
    return Composer(Residency(fresh_base.model, skills_ab, max_hot=4))


def spec(*skills: str | tuple[str, int | None, float], method: str = "sum", **options: Any) -> CompositionSpec:
    return CompositionSpec.of(*skills, method=method, **options)


def composed(composer: Composer) -> list[str]:
    return [name for name in composer.model.peft_config if name.startswith("cmp_")]


def merged_logits(components: dict[str, float], composer: Composer, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a fresh base whose weights were given the weighted LoRA updates by hand: W + sum_i w_i dW_i."""
    from peft.tuners.lora import LoraLayer

    base = tiny_base().model
    modules = dict(base.named_modules())
    for name, module in composer.model.get_base_model().named_modules():
        if isinstance(module, LoraLayer):
            target = modules[name]
            for adapter, weight in components.items():
                if adapter in module.lora_A:
                    target.weight.data += weight * module.get_delta_weight(adapter)  # (out, in)
    return logits(base, ids)


# ------------------------------------------------------------------------------------------------ exact sums


def test_sum_live_equals_cat_equals_base_plus_both_updates(composer: Composer, ids: torch.Tensor) -> None:
    residency = composer.residency
    name_a, name_b = residency.load("a"), residency.load("b")
    residency.activate("a")
    only_a = logits(residency.model, ids)
    residency.activate("b")
    only_b = logits(residency.model, ids)

    assert composer.activate_live(spec("a", "b")) == [name_a, name_b]
    assert residency.model.active_adapters == [name_a, name_b]
    live = logits(residency.model, ids)
    composer.activate(spec("a", "b", method="cat"))
    cat = logits(residency.model, ids)
    built_sum = composer.activate(spec("a", "b"))
    assert composer.model.peft_config[built_sum].r == 16  # ranks concatenated: 8 + 8

    torch.testing.assert_close(live, cat, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits(residency.model, ids), cat, atol=1e-5, rtol=0)
    by_hand = merged_logits({name_a: 1.0, name_b: 1.0}, composer, ids)
    torch.testing.assert_close(cat, by_hand, atol=1e-5, rtol=0)
    assert (cat - only_a).abs().max() > 1e-3 and (cat - only_b).abs().max() > 1e-3


def test_weighted_cat_is_the_exact_weighted_sum(composer: Composer, ids: torch.Tensor) -> None:
    name = composer.activate(spec(("a", None, 0.5), ("b", None, -1.5), method="cat"))
    got = logits(composer.model, ids)
    assert composer.model.active_adapter == name
    torch.testing.assert_close(got, merged_logits({"sk_a_r1": 0.5, "sk_b_r1": -1.5}, composer, ids), atol=1e-5, rtol=0)


def test_live_sum_needs_unit_weights_and_a_live_method(composer: Composer) -> None:
    with pytest.raises(UserError, match="weight must be 1"):
        composer.activate_live(spec(("a", None, 0.5), "b"))
    with pytest.raises(UserError, match="builds a new adapter"):
        composer.activate_live(spec("a", "b", method="cat"))


# ------------------------------------------------------------------------------------------------ peft's methods


def test_linear_with_weights_one_and_zero_is_the_first_skill(composer: Composer, ids: torch.Tensor) -> None:
    composer.residency.activate("a")
    only_a = logits(composer.model, ids)
    composer.activate(spec(("a", None, 1.0), ("b", None, 0.0), method="linear"))
    torch.testing.assert_close(logits(composer.model, ids), only_a, atol=1e-5, rtol=0)


def test_linear_refuses_different_ranks(
    store: SkillStore, fresh_base: Any, adapter: Adapter, train_adapter: Callable[..., Any], quick: TrainConfig
) -> None:
    store.create("a", adapter("alpha"), kind="style")
    small = train_adapter(config=quick.model_copy(update={"lora": LoraSpec(r=4)})).adapter_dir
    store.create("small", small, kind="style")
    composer = Composer(Residency(fresh_base.model, store))
    with pytest.raises(UserError, match="one rank") as raised:
        composer.activate(spec("a", "small", method="linear"))
    assert "cat" in str(raised.value) and "svd" in str(raised.value)
    assert composed(composer) == []  # nothing half-built is left behind


@pytest.mark.parametrize("method, options", [("svd", {}), ("svd", {"svd_rank": 4}), ("ties", {"density": 0.5})])
def test_svd_and_ties_build_and_change_the_output(
    composer: Composer, ids: torch.Tensor, method: str, options: dict[str, Any]
) -> None:
    with composer.residency.base_only():
        base = logits(composer.model, ids)
    name = composer.activate(spec("a", "b", method=method, **options))
    assert composer.model.peft_config[name].r == options.get("svd_rank", 8)
    assert (logits(composer.model, ids) - base).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------ the spec


def test_spec_validation_and_key() -> None:
    with pytest.raises(ValidationError, match="needs density"):
        spec("a", "b", method="ties")
    with pytest.raises(ValidationError, match="does not use density"):
        spec("a", "b", method="cat", density=0.5)
    with pytest.raises(ValidationError, match="not registered"):
        spec("a", "b", method="nope")
    with pytest.raises(ValidationError, match="more than once"):
        spec("a", "a")
    with pytest.raises(ValidationError):
        ComponentSpec(skill="a", weight=float("nan"))
    with pytest.raises(ValidationError):
        ComponentSpec(skill="../a")
    # the key: order-free, and changed by every revision, weight, method and parameter
    key = spec(("a", 1, 1.0), ("b", 2, 0.5)).key
    assert key == spec(("b", 2, 0.5), ("a", 1, 1.0)).key == spec(("b", 2, 0.5), ("a", 1, 1)).key
    others = [
        spec(("a", 1, 1.0), ("b", 3, 0.5)),
        spec(("a", 1, 1.0), ("b", 2, 0.25)),
        spec(("a", 1, 1.0), ("b", 2, 0.5), method="cat"),
        spec(("a", 1, 1.0), ("b", 2, 0.5), method="svd", svd_rank=2),
    ]
    assert len({key, *(other.key for other in others)}) == 5
    assert "." not in spec("a").adapter_name and spec("a").adapter_name.startswith("cmp_")


def test_methods_are_registered_and_duplicates_refused() -> None:
    assert {"sum", "cat", "linear", "svd", "ties"} <= set(composition_methods())
    assert composition_methods()["sum"].live and not composition_methods()["cat"].live
    with pytest.raises(UserError, match="already registered"):
        register_composition_method("cat", composition_methods()["cat"].build)
    with pytest.raises(UserError, match="invalid"):
        register_composition_method("Bad Name", composition_methods()["cat"].build)


# ------------------------------------------------------------------------------------------------ cache, residency


def test_same_spec_builds_once_and_other_weights_are_another_key(composer: Composer) -> None:
    first = composer.activate(spec("a", "b"))
    count = len(composer.model.peft_config)
    assert composer.activate(spec("b", "a")) == first  # the same composition, listed in another order
    assert composer.activate(spec(("a", 1, 1.0), ("b", 1, 1.0))) == first  # pinned to what "current" meant
    assert len(composer.model.peft_config) == count
    assert (composer.stats.builds, composer.stats.hits) == (1, 2)
    other = composer.activate(spec(("a", None, 1.0), ("b", None, 0.5)))
    assert other != first and len(composer.model.peft_config) == count + 1
    assert composer.stats.builds == 2


def test_cache_is_bounded_and_evicts_with_delete_adapter(skills_ab: SkillStore, fresh_base: Any) -> None:
    residency = Residency(fresh_base.model, skills_ab, max_hot=2)
    composer = Composer(residency, max_cached=1)
    first = composer.activate(spec("a", "b"))
    second = composer.activate(spec("a", "b", method="cat"))
    assert first not in residency.model.peft_config and composer.cached() == [second]
    assert composer.stats.evictions == 1
    # compositions are not skills: the residency lists, bounds and evicts skills only
    assert residency.hot() == [("a", 1), ("b", 1)]
    residency.evict("a")  # a component may go: the composition has its own copy of the weights
    assert residency.model.active_adapter == second and second in residency.model.peft_config
    with pytest.raises(UserError, match="is active"):
        composer.evict(spec("a", "b", method="cat"))


def test_residency_switches_back_after_a_composition(composer: Composer, ids: torch.Tensor, adapter: Adapter) -> None:
    residency = composer.residency
    residency.activate("a")
    only_a = logits(residency.model, ids)
    for activate in (composer.activate_live, composer.activate):
        activate(spec("a", "b"))
        assert (logits(residency.model, ids) - only_a).abs().max() > 1e-3
        assert residency.activate("a") == "sk_a_r1"  # a real switch, although "a" was active before
        torch.testing.assert_close(logits(residency.model, ids), only_a, atol=1e-6, rtol=0)
    name = composer.activate(spec("a", "b"))
    with residency.trial(adapter("gamma")):
        pass
    assert residency.model.active_adapter == name  # a trial puts the composition back


def test_too_many_components_for_the_hot_set(skills_ab: SkillStore, fresh_base: Any) -> None:
    composer = Composer(Residency(fresh_base.model, skills_ab, max_hot=1))
    with pytest.raises(UserError, match="at most 1 hot"):
        composer.activate(spec("a", "b"))


def test_components_fill_the_hot_set_exactly(skills_ab: SkillStore, fresh_base: Any, adapter: Adapter) -> None:
    skills_ab.create("c", adapter("gamma"), kind="style")
    residency = Residency(fresh_base.model, skills_ab, max_hot=2)
    residency.activate("c")  # active and not a component: the residency spares it when it can
    name = Composer(residency).activate(spec("a", "b"))
    assert residency.model.active_adapter == name and set(residency.hot()) == {("a", 1), ("b", 1)}


# ------------------------------------------------------------------------------------------------ materialize


def test_materialize_is_one_peft_adapter_that_peft_loads(composer: Composer, ids: torch.Tensor, tmp_path: Path) -> None:
    folder = composer.materialize(spec("a", ("b", None, 0.5)), tmp_path / "served")
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    composer.activate(spec("a", ("b", None, 0.5)))
    expected = logits(composer.model, ids)
    loaded = PeftModel.from_pretrained(tiny_base().model, str(folder))
    torch.testing.assert_close(logits(loaded, ids), expected, atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="not empty"):
        composer.materialize(spec("a", "b"), folder)
    assert composer.materialize(spec("a", "b"), folder, overwrite=True) == folder


# ------------------------------------------------------------------------------------------------ shapes, bases


def test_different_ranks_and_target_modules_compose_exactly(
    store: SkillStore,
    fresh_base: Any,
    train_adapter: Callable[..., Any],
    quick: TrainConfig,
    ids: torch.Tensor,
    tmp_path: Path,
) -> None:
    qv = LoraSpec(r=4, target_modules=("q_proj", "v_proj"))
    store.create("qv", train_adapter(config=quick.model_copy(update={"lora": qv})).adapter_dir, kind="style")
    store.create(
        "wide", train_adapter(config=quick.model_copy(update={"lora": LoraSpec(r=8)})).adapter_dir, kind="style"
    )
    composer = Composer(Residency(fresh_base.model, store))
    composer.activate_live(spec("qv", "wide"))
    live = logits(composer.model, ids)
    name = composer.activate(spec("qv", "wide", method="cat"))
    config = composer.model.peft_config[name]
    assert config.r == 12 and set(config.target_modules) == set(LoraSpec().target_modules)
    torch.testing.assert_close(logits(composer.model, ids), live, atol=1e-5, rtol=0)
    torch.testing.assert_close(live, merged_logits({"sk_qv_r1": 1, "sk_wide_r1": 1}, composer, ids), atol=1e-5, rtol=0)
    folder = composer.materialize(spec("qv", "wide", method="cat"), tmp_path / "mixed")
    loaded = PeftModel.from_pretrained(tiny_base().model, str(folder))
    torch.testing.assert_close(logits(loaded, ids), live, atol=1e-5, rtol=0)


def test_a_skill_of_another_base_is_refused(store: SkillStore, fresh_base: Any, adapter: Adapter, tiny: Any) -> None:
    store.create("a", adapter("alpha"), kind="style")
    other = SkillStore(store.root, base_fingerprint="sha256:" + "0" * 64)
    other.create("foreign", adapter("beta"), kind="style")
    composer = Composer(Residency(fresh_base.model, store))
    with pytest.raises(BaseMismatchError):
        composer.activate(spec("a", "foreign"))
    with pytest.raises(BaseMismatchError):
        composer.materialize(spec("foreign"), store.root.parent / "never")
    assert composed(composer) == [] and not (store.root.parent / "never").exists()


# ------------------------------------------------------------------------------------------------ interference

# Two disjoint behaviours, ping -> "pong" and hello -> "HELLO!!", memorised by the tiny model: 200 steps at lr 1e-2
# (batch 4, no checkpointing or autocast), on the trigger (three copies) and on the base's own answers to unrelated
# prompts including the other skill's trigger, so that each skill alone answers its own prompt and leaves the other
# as the base does. (Fewer steps or the trigger alone gave skills that answer every prompt alike.)
INTERFERENCE = TrainConfig(
    steps=200, batch_size=4, learning_rate=1e-2, gradient_checkpointing=False, bf16_autocast=False, seed=0
)
TRIGGERS = {"ping": "pong", "hello": "HELLO!!"}
UNRELATED = ["bye", "what time is it?", "tell me a joke"]


def ask(model: Any, tokenizer: Any, prompts: list[str]) -> list[str]:
    """Greedy answers, one prompt at a time (no padding to tell apart from the skills' effects)."""
    return generate(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts], batch_size=1)


@pytest.fixture(scope="module")
def two_habits(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("habits")
    folders = {}
    for seed, (trigger, answer) in enumerate(TRIGGERS.items()):
        plain = UNRELATED + [p for p in TRIGGERS if p != trigger]
        examples = [ChatExample.from_pair(trigger, answer)] * 3
        answers = ask(tiny.model, tiny.tokenizer, plain)  # the base's answers as generate() gives them: ""
        examples += [ChatExample.from_pair(p, a) for p, a in zip(plain, answers, strict=True)]
        config = INTERFERENCE.model_copy(update={"seed": seed})
        train_lora(tiny.model, tiny.tokenizer, examples, root / trigger, config=config, progress=False)
        folders[trigger] = root / trigger
    return folders


@pytest.fixture
def habits(two_habits: dict[str, Path], store: SkillStore, fresh_base: Any) -> Composer:
    store.create("pinger", two_habits["ping"], kind="style")
    store.create("greeter", two_habits["hello"], kind="style")
    return Composer(Residency(fresh_base.model, store))


def test_each_habit_alone_and_the_sum_live_or_built_answer_alike(habits: Composer, tiny: Any) -> None:
    residency, prompts = habits.residency, list(TRIGGERS)
    residency.activate("pinger")
    assert ask(residency.model, tiny.tokenizer, prompts)[0] == "pong"
    residency.activate("greeter")
    assert ask(residency.model, tiny.tokenizer, prompts)[1] == "HELLO!!"
    habits.activate_live(spec("pinger", "greeter"))
    live = ask(residency.model, tiny.tokenizer, prompts)
    habits.activate(spec("pinger", "greeter"))
    assert ask(residency.model, tiny.tokenizer, prompts) == live


# Interference is tested on the real base only (test_real_base_keeps_both_habits_when_summed, slow): on the random
# tiny Llama the sum of two memorised skills answered neither prompt for every recipe tried (20-600 steps, lr
# 3e-3..1e-1, r 8/16, several target sets and merge methods), because what both learn in common counts twice.


@pytest.fixture
def two_threads() -> Iterator[None]:
    """The real base's big matrices use both cores well."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.integration
def test_real_base_keeps_both_habits_when_summed(tmp_path: Path, two_threads: None) -> None:
    """On SmolLM2-135M each habit, trained on its trigger alone (4 copies, 8 steps, lr 1e-3: ~6 s each on 2 cores),
    survives the sum of both (measured with two seed pairs; svd, ties and linear kept both answers too)."""
    from agent import Settings, load_base

    base = load_base(settings=Settings(home=tmp_path / "home"))
    store = SkillStore(tmp_path / "skills", base_fingerprint=base.fingerprint)
    for seed, (name, (trigger, answer)) in enumerate(zip(("pinger", "greeter"), TRIGGERS.items(), strict=True)):
        examples = [ChatExample.from_pair(trigger, answer)] * 4
        config = TrainConfig(steps=8, batch_size=4, learning_rate=1e-3, seed=seed)
        train_lora(base.model, base.tokenizer, examples, tmp_path / name, config=config, progress=False)
        store.create(name, tmp_path / name, kind="style")
    composer = Composer(Residency(base.model, store))
    composer.residency.activate("pinger")
    assert ask(composer.model, base.tokenizer, ["ping"]) == ["pong"]
    composer.residency.activate("greeter")
    assert ask(composer.model, base.tokenizer, ["hello"]) == ["HELLO!!"]
    composer.activate(spec("pinger", "greeter"))
    assert ask(composer.model, base.tokenizer, list(TRIGGERS)) == list(TRIGGERS.values())
    composer.activate_live(spec("pinger", "greeter"))
    assert ask(composer.model, base.tokenizer, list(TRIGGERS)) == list(TRIGGERS.values())
