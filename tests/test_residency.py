"""Residency: hot / warm / cold skills on one shared model, LRU bounds, no needless loads, harmless failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer

from agent.testing import tiny_base
from skills import BaseMismatchError, CorruptSkillError, Residency, SkillStore, UserError

# Evicting the active adapter makes peft warn and pick another one; several tests do it on purpose
# (test_prefetching_does_not_switch_the_active_skill is about what it means).
pytestmark = pytest.mark.filterwarnings("ignore:Adapter .* was active which is now deleted:UserWarning")
PROBE = "<|im_start|>user\nping<|im_end|>\n<|im_start|>assistant\n"
Adapter = Callable[[str], Path]


@torch.no_grad()
def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits  # (1, seq, vocab)


@pytest.fixture
def ids(tiny: Any) -> torch.Tensor:
    return torch.tensor([tiny.tokenizer(PROBE, add_special_tokens=False)["input_ids"]])  # (1, seq)


@pytest.fixture
def four(store: SkillStore, adapter: Adapter) -> SkillStore:
    """Skills a, b, c (one revision each, distinct adapters) and d (a copy of a's adapter under another name)."""
    store.create("a", adapter("alpha"), kind="style")
    store.create("b", adapter("beta"), kind="style")
    store.create("c", adapter("gamma"), kind="style")
    store.create("d", adapter("alpha"), kind="style")
    return store


def adapters_in(residency: Residency) -> set[str]:
    model = residency.model
    return set(model.peft_config) if isinstance(model, PeftModel) else set()


def forbid_disk(monkeypatch: pytest.MonkeyPatch, store: SkillStore) -> None:
    """Make any read of adapter files fail the test, whatever the counters say."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"read_adapter{args} was called")

    monkeypatch.setattr(store, "read_adapter", refuse)


def corrupt(store: SkillStore, name: str, number: int | None = None) -> None:
    weights = store.revision_dir(name, number) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


# ------------------------------------------------------------------------------------------------ states


def test_hot_warm_cold_transitions(four: SkillStore, fresh_base: Any) -> None:
    residency = Residency(fresh_base.model, four, max_hot=2, max_warm=1)
    stats = residency.stats
    names: dict[str, str] = {}

    def activate(skill: str) -> None:
        names[skill] = residency.activate(skill)
        # after every load: the model holds exactly the hot adapters, never more than max_hot
        assert adapters_in(residency) == {names[key[0]] for key in residency.hot()}
        assert len(adapters_in(residency)) <= 2
        assert residency.model.active_adapter == names[skill]

    def states() -> dict[str, str]:
        return {name: residency.state(name) for name in "abcd"}

    assert states() == dict.fromkeys("abcd", "cold") and residency.hot() == [] and residency.warm() == []
    assert not isinstance(residency.model, PeftModel)  # nothing wrapped before the first load

    activate("a")
    assert states() == {"a": "hot", "b": "cold", "c": "cold", "d": "cold"}
    assert residency.hot() == [("a", 1)]
    assert isinstance(residency.model, PeftModel)

    activate("b")
    assert residency.hot() == [("a", 1), ("b", 1)]

    activate("a")  # a becomes the most recently used
    assert residency.hot() == [("b", 1), ("a", 1)]
    assert (stats.disk_loads, stats.model_loads, stats.hot_hits, stats.switches) == (2, 2, 1, 3)

    activate("c")  # evicts b, the least recently used, to warm
    assert states() == {"a": "hot", "b": "warm", "c": "hot", "d": "cold"}
    assert residency.hot() == [("a", 1), ("c", 1)] and residency.warm() == [("b", 1)]
    assert stats.hot_evictions == 1

    activate("b")  # warm -> hot from RAM; a is evicted to warm
    assert states() == {"a": "warm", "b": "hot", "c": "hot", "d": "cold"}
    assert residency.hot() == [("c", 1), ("b", 1)] and residency.warm() == [("a", 1)]
    assert (stats.disk_loads, stats.model_loads) == (3, 4)

    activate("d")  # c goes warm, which pushes a (max_warm=1) to cold
    assert states() == {"a": "cold", "b": "hot", "c": "warm", "d": "hot"}
    assert residency.hot() == [("b", 1), ("d", 1)] and residency.warm() == [("c", 1)]
    assert (stats.disk_loads, stats.hot_evictions, stats.warm_evictions) == (4, 3, 1)

    activate("a")  # cold again: read from disk
    assert stats.disk_loads == 5
    assert residency.hot() == [("d", 1), ("a", 1)] and residency.warm() == [("b", 1)]

    residency.evict("d")  # hot -> warm
    assert residency.state("d") == "warm" and residency.hot() == [("a", 1)] and residency.warm() == [("d", 1)]
    assert adapters_in(residency) == {names["a"]}
    residency.evict("d")  # warm -> cold
    assert residency.state("d") == "cold" and residency.warm() == []


def test_max_hot_must_be_positive(store: SkillStore, fresh_base: Any) -> None:
    with pytest.raises(UserError):
        Residency(fresh_base.model, store, max_hot=0)


def test_switching_between_hot_skills_loads_nothing(
    four: SkillStore, fresh_base: Any, ids: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    residency = Residency(fresh_base.model, four, max_hot=2, max_warm=1)
    residency.activate("a")
    logits_a = logits(residency.model, ids)
    residency.activate("b")
    logits_b = logits(residency.model, ids)
    assert not torch.allclose(logits_a, logits_b)
    before = residency.stats.model_copy()
    adapters = adapters_in(residency)
    forbid_disk(monkeypatch, four)

    for _ in range(3):
        residency.activate("a")
        assert torch.equal(logits(residency.model, ids), logits_a)
        residency.activate("b")
        assert torch.equal(logits(residency.model, ids), logits_b)
    residency.activate("b")  # already active: not even a switch

    after = residency.stats
    assert (after.disk_loads, after.model_loads) == (before.disk_loads, before.model_loads)
    assert after.switches == before.switches + 6
    assert after.hot_hits == before.hot_hits + 7
    assert adapters_in(residency) == adapters


def test_warm_to_hot_reads_nothing_from_disk(
    four: SkillStore, fresh_base: Any, ids: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    residency = Residency(fresh_base.model, four, max_hot=1, max_warm=2)
    residency.activate("a")
    logits_a = logits(residency.model, ids)
    residency.activate("b")
    assert residency.state("a") == "warm"
    disk_loads = residency.stats.disk_loads
    forbid_disk(monkeypatch, four)
    (four.revision_dir("a") / "adapter_model.safetensors").unlink()  # gone from disk: RAM is all that is left

    residency.activate("a")
    assert residency.state("a") == "hot"
    assert residency.stats.disk_loads == disk_loads
    assert torch.equal(logits(residency.model, ids), logits_a)


def test_loaded_weights_do_not_follow_later_writes_to_the_file(
    four: SkillStore, fresh_base: Any, ids: torch.Tensor
) -> None:
    residency = Residency(fresh_base.model, four, max_hot=1, max_warm=1)
    residency.activate("a")
    logits_a = logits(residency.model, ids)
    residency.activate("b")
    logits_b = logits(residency.model, ids)
    assert residency.state("a") == "warm"
    # overwrite both files in place, as `cp` of another adapter over them would (same size, same layout); the whole
    # new content is written before anything reads the mapping, so this cannot SIGBUS
    other = (four.revision_dir("c") / "adapter_model.safetensors").read_bytes()
    for name in ("a", "b"):
        path = four.revision_dir(name) / "adapter_model.safetensors"
        assert path.stat().st_size == len(other)
        path.write_bytes(other)
    assert torch.equal(logits(residency.model, ids), logits_b)  # hot: the weights that were verified
    residency.activate("a")
    assert torch.equal(logits(residency.model, ids), logits_a)  # warm: the weights that were verified


# ------------------------------------------------------------------------------------------------ bounds


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["activate", "load", "evict"]), st.sampled_from([("a", 1), ("b", 1), ("s", 1), ("s", 2)])
        ),
        min_size=1,
        max_size=14,
    ),
    max_hot=st.integers(1, 3),
    max_warm=st.integers(0, 2),
)
def test_bounds_hold_and_outputs_stay_right_under_any_sequence(
    reference: dict[tuple[str, int], torch.Tensor],
    two_rev_store: SkillStore,
    ids: torch.Tensor,
    ops: list[tuple[str, tuple[str, int]]],
    max_hot: int,
    max_warm: int,
) -> None:
    residency = Residency(tiny_base().model, two_rev_store, max_hot=max_hot, max_warm=max_warm)
    for op, key in ops:
        getattr(residency, op)(*key)
        hot, warm = residency.hot(), residency.warm()
        assert len(adapters_in(residency)) <= max_hot
        assert len(hot) == len(adapters_in(residency))
        assert len(warm) <= max_warm and not set(hot) & set(warm)
        if op == "activate":
            assert hot[-1] == key
            assert torch.equal(logits(residency.model, ids), reference[key])
    s = residency.stats
    assert s.model_loads - s.hot_evictions == len(residency.hot())


@pytest.fixture
def two_rev_store(store: SkillStore, adapter: Adapter) -> SkillStore:
    """Skills a (alpha), b (beta) and s with revision 1 (gamma) and 2 (alpha)."""
    store.create("a", adapter("alpha"), kind="style")
    store.create("b", adapter("beta"), kind="style")
    store.create("s", adapter("gamma"), kind="style")
    store.add_revision("s", adapter("alpha"))
    return store


@pytest.fixture
def reference(two_rev_store: SkillStore, ids: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
    """Each key's logits, from a residency that never evicts."""
    residency = Residency(tiny_base().model, two_rev_store, max_hot=8)
    out = {}
    for key in [("a", 1), ("b", 1), ("s", 1), ("s", 2)]:
        residency.activate(*key)
        out[key] = logits(residency.model, ids)
    return out


def test_two_revisions_of_one_skill_can_be_hot_at_once(
    two_rev_store: SkillStore, fresh_base: Any, ids: torch.Tensor, reference: dict[tuple[str, int], torch.Tensor]
) -> None:
    residency = Residency(fresh_base.model, two_rev_store, max_hot=4)
    first = residency.activate("s", 1)
    logits_1 = logits(residency.model, ids)
    second = residency.activate("s", 2)
    logits_2 = logits(residency.model, ids)
    assert first != second
    assert set(residency.hot()) == {("s", 1), ("s", 2)}
    assert adapters_in(residency) == {first, second}
    assert not torch.allclose(logits_1, logits_2, atol=1e-4)
    # revision 2 holds alpha's weights, like skill a: same output through another name
    residency.activate("a")
    assert torch.equal(logits(residency.model, ids), logits_2)
    assert torch.equal(logits_1, reference[("s", 1)])
    # the current revision is 2; after a rollback "s" means revision 1, which is already hot
    assert residency.state("s") == "hot"
    loads = residency.stats.model_loads
    two_rev_store.rollback("s")
    assert residency.activate("s") == first
    assert residency.stats.model_loads == loads
    assert torch.equal(logits(residency.model, ids), logits_1)


# ------------------------------------------------------------------------------------------------ failures


def test_corrupt_skill_changes_nothing(four: SkillStore, fresh_base: Any, ids: torch.Tensor) -> None:
    residency = Residency(fresh_base.model, four, max_hot=2, max_warm=1)
    name_a = residency.activate("a")
    logits_a = logits(residency.model, ids)
    before = residency.stats.model_copy()
    corrupt(four, "b")

    with pytest.raises(CorruptSkillError) as info:
        residency.activate("b")
    assert "'b'" in str(info.value) and "checksum" in str(info.value)

    assert residency.model.active_adapter == name_a
    assert adapters_in(residency) == {name_a}
    assert residency.hot() == [("a", 1)] and residency.warm() == []
    assert residency.state("b") == "cold"
    assert residency.stats == before
    assert torch.equal(logits(residency.model, ids), logits_a)
    # and other skills still load
    residency.activate("c")
    residency.activate("a")
    assert torch.equal(logits(residency.model, ids), logits_a)


def test_corrupt_first_skill_leaves_the_base_unwrapped(four: SkillStore, fresh_base: Any, ids: torch.Tensor) -> None:
    base_logits = logits(fresh_base.model, ids)
    residency = Residency(fresh_base.model, four)
    corrupt(four, "a")
    with pytest.raises(CorruptSkillError):
        residency.activate("a")
    assert residency.model is fresh_base.model
    assert not any(isinstance(m, BaseTunerLayer) for m in fresh_base.model.modules())
    assert torch.equal(logits(residency.model, ids), base_logits)
    residency.activate("b")  # the residency is still usable
    assert residency.hot() == [("b", 1)]


def test_skill_of_another_base_is_refused(four: SkillStore, fresh_base: Any) -> None:
    other = SkillStore(four.root, base_fingerprint="sha256:another-base")
    residency = Residency(fresh_base.model, other)
    with pytest.raises(BaseMismatchError):
        residency.activate("a")
    assert residency.hot() == [] and adapters_in(residency) == set()


def test_unknown_skill(four: SkillStore, fresh_base: Any) -> None:
    from skills import SkillNotFoundError

    residency = Residency(fresh_base.model, four)
    with pytest.raises(SkillNotFoundError):
        residency.activate("zzz")
    with pytest.raises(SkillNotFoundError):
        residency.activate("a", 7)
    assert residency.hot() == []


def test_prefetching_does_not_switch_the_active_skill(four: SkillStore, fresh_base: Any, ids: torch.Tensor) -> None:
    base_logits = logits(fresh_base.model, ids)
    residency = Residency(fresh_base.model, four, max_hot=2)
    residency.activate("a")
    logits_a = logits(residency.model, ids)
    residency.load("b")
    residency.load("c")  # a is both the least recently loaded and the active skill
    out = logits(residency.model, ids)
    # acceptable: a is still what runs, or (if it had to go) the bare base; never another skill picked by peft
    assert torch.equal(out, logits_a) or torch.equal(out, base_logits)


# ------------------------------------------------------------------------------------------------ trial


def test_trial_runs_a_candidate_then_restores_the_active_skill(
    four: SkillStore, fresh_base: Any, ids: torch.Tensor, trained: dict[str, Path]
) -> None:
    residency = Residency(fresh_base.model, four, max_hot=2)
    residency.activate("b")  # b holds beta's adapter: what the candidate folder should compute
    logits_b = logits(residency.model, ids)
    name_a = residency.activate("a")
    logits_a = logits(residency.model, ids)
    adapters, hot, stats = adapters_in(residency), residency.hot(), residency.stats.model_copy()

    with residency.trial(trained["beta"]) as model:
        assert torch.equal(logits(model, ids), logits_b)
        assert len(adapters_in(residency)) == len(adapters) + 1

    assert residency.model.active_adapter == name_a
    assert torch.equal(logits(residency.model, ids), logits_a)
    assert adapters_in(residency) == adapters and residency.hot() == hot and residency.stats == stats


def test_trial_cleans_up_after_an_error(
    four: SkillStore, fresh_base: Any, ids: torch.Tensor, trained: dict[str, Path]
) -> None:
    residency = Residency(fresh_base.model, four)
    residency.activate("a")
    logits_a = logits(residency.model, ids)
    adapters = adapters_in(residency)
    with pytest.raises(RuntimeError, match="boom"), residency.trial(trained["gamma"]):
        raise RuntimeError("boom")
    assert adapters_in(residency) == adapters
    assert torch.equal(logits(residency.model, ids), logits_a)


def test_trial_before_any_skill_leaves_a_usable_model(
    four: SkillStore, fresh_base: Any, ids: torch.Tensor, trained: dict[str, Path]
) -> None:
    base_logits = logits(fresh_base.model, ids)
    residency = Residency(fresh_base.model, four)
    with residency.trial(trained["beta"]) as model:
        assert not torch.equal(logits(model, ids), base_logits)
    assert torch.equal(logits(residency.model, ids), base_logits)


# ------------------------------------------------------------------------------------------------ base_only


def test_base_only_gives_the_base_logits(four: SkillStore, fresh_base: Any, ids: torch.Tensor) -> None:
    base_logits = logits(tiny_base().model, ids)
    residency = Residency(fresh_base.model, four, max_hot=2)
    with residency.base_only() as model:  # before any skill: the plain base
        assert torch.equal(logits(model, ids), base_logits)
    residency.load("b")
    residency.activate("a")
    logits_a = logits(residency.model, ids)
    assert not torch.allclose(logits_a, base_logits, atol=1e-4)
    with residency.base_only() as model:
        assert torch.equal(logits(model, ids), base_logits)
    # adapters are back on after the block
    assert torch.equal(logits(residency.model, ids), logits_a)
    assert residency.hot() == [("b", 1), ("a", 1)]


def test_evicting_the_active_skill_keeps_base_only_and_merging_usable(
    store: SkillStore, fresh_base: Any, ids: torch.Tensor, tmp_path: Path
) -> None:
    """peft keeps naming a deleted adapter as active when the first adapted layer holds no other one; base_only and
    merged decoding (both through peft's disable_adapter) then failed with a KeyError."""
    from agent.testing import random_adapter

    base_logits = logits(tiny_base().model, ids)
    store.create("qv", random_adapter(fresh_base, tmp_path / "qv", target_modules=("q_proj", "v_proj")), kind="style")
    store.create("down", random_adapter(fresh_base, tmp_path / "down", target_modules=("down_proj",)), kind="style")
    candidate = random_adapter(fresh_base, tmp_path / "candidate", target_modules=("q_proj",))
    residency = Residency(fresh_base.model, store)
    residency.load("down")
    residency.activate("qv")
    residency.evict("qv")  # q_proj, the first adapted layer, holds no other adapter
    with residency.base_only() as model:
        assert torch.equal(logits(model, ids), base_logits)
    with residency.trial(candidate):
        pass  # deleted again with no single adapter to go back to
    with residency.merged(residency.load("down")) as model:
        assert not torch.equal(logits(model, ids), base_logits)
    residency.restore()
    with residency.base_only() as model:
        assert torch.equal(logits(model, ids), base_logits)
