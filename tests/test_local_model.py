"""The in-process chat model: one skill, several skills composed, and mixed-skill batches (peft `adapter_names`)
answering exactly what one-at-a-time generation answers."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from agent.backends.local import LocalChatModel
from agent.backends.protocol import ChatRequest
from skills import Residency, SkillStore, UserError
from skills.compose import CompositionSpec

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def fill(store: SkillStore, loud: dict[str, Path], tmp_path: Path) -> SkillStore:
    for name, folder in loud.items():
        copy = tmp_path / "copies" / name
        shutil.copytree(folder, copy)
        store.create(name, copy, kind="style")
    return store


@pytest.fixture
def local(store: SkillStore, loud: dict[str, Path], fresh_base: Any, tmp_path: Path) -> LocalChatModel:
    fill(store, loud, tmp_path)
    # unmerged, so that one-at-a-time runs the same LoRA arithmetic as the mixed batch (merging rounds differently)
    return LocalChatModel(fresh_base, Residency(fresh_base.model, store, max_hot=4), merge_for_decode=False)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


PROMPTS = ["ping", "hello", "colour of the sky?", "call the tool", "2+2?"]


def test_one_skill_and_two_composed_change_the_answer(local: LocalChatModel) -> None:
    base = local.generate(chat("ping"), max_new_tokens=8)
    one = local.generate(chat("ping"), skills=[("a", 1)], max_new_tokens=8)
    both = local.generate(chat("ping"), skills=[("a", 1), ("b", 1)], max_new_tokens=8)
    assert len({tuple(base.tokens), tuple(one.tokens), tuple(both.tokens)}) == 3
    assert len(base.tokens) == base.completion_tokens
    assert both.completion_tokens >= 1 and both.prompt_tokens == base.prompt_tokens
    # the composition is the composer's exact sum, built once and cached
    assert local.composer.stats.builds == 1
    local.generate(chat("hello"), skills=[("b", 1), ("a", 1)], max_new_tokens=4)  # order does not matter
    assert local.composer.stats.builds == 1 and local.composer.stats.hits >= 1
    name = CompositionSpec.of(("a", 1), ("b", 1)).adapter_name
    assert name in local.residency.model.peft_config


def test_mixed_batch_answers_what_one_at_a_time_answers(local: LocalChatModel) -> None:
    skill_sets: list[list[tuple[str, int]]] = [[], [("a", 1)], [("b", 1)], [("a", 1), ("c", 1)], [("c", 1)]]
    requests = [
        ChatRequest(messages=chat(prompt), skills=skills, max_new_tokens=6 + i)
        for i, (prompt, skills) in enumerate(zip(PROMPTS, skill_sets, strict=True))
    ]
    serial = [local.generate(r.messages, skills=r.skills, max_new_tokens=r.max_new_tokens) for r in requests]
    batched = local.generate_batch(requests)
    assert [g.tokens for g in batched] == [g.tokens for g in serial]
    assert [g.prompt_tokens for g in batched] == [g.prompt_tokens for g in serial]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in serial]
    # and it was one batch, not five generations: nothing was switched while it ran
    switches = local.residency.stats.switches
    local.generate_batch(requests)
    assert local.residency.stats.switches - switches <= 1


def test_mixed_batch_splits_what_does_not_fit_the_hot_set(
    store: SkillStore, loud: dict[str, Path], fresh_base: Any, tmp_path: Path
) -> None:
    fill(store, loud, tmp_path)
    local = LocalChatModel(
        fresh_base, Residency(fresh_base.model, store, max_hot=2), max_batch=16, merge_for_decode=False
    )
    requests = [ChatRequest(messages=chat("ping"), skills=[(n, 1)], max_new_tokens=4) for n in ("a", "b", "c", "a")]
    serial = [local.generate(r.messages, skills=r.skills, max_new_tokens=4).tokens for r in requests]
    chunks = list(local.batches_that_fit(list(range(4)), requests))
    assert chunks == [[0, 1], [2, 3]]  # a, b | c, a: never more distinct skills than stay hot
    assert [g.tokens for g in local.generate_batch(requests)] == serial


def test_batch_keeps_order_across_temperatures_and_an_empty_batch(local: LocalChatModel) -> None:
    assert local.generate_batch([]) == []
    requests = [
        ChatRequest(messages=chat("ping"), skills=[("a", 1)], max_new_tokens=4, temperature=0.9),
        ChatRequest(messages=chat("hello"), max_new_tokens=4),
        ChatRequest(messages=chat("ping"), skills=[("a", 1)], max_new_tokens=4),
    ]
    out = local.generate_batch(requests)
    assert len(out) == 3
    assert out[2].tokens == local.generate(chat("ping"), skills=[("a", 1)], max_new_tokens=4).tokens
    assert out[1].tokens == local.generate(chat("hello"), max_new_tokens=4).tokens


def test_the_loud_adapters_really_differ(local: LocalChatModel) -> None:
    """Guards the tests above: with adapters that did not change the output, equality would prove nothing."""
    answers = {
        tuple(local.generate(chat("ping"), skills=skills, max_new_tokens=6).tokens)
        for skills in ([], [("a", 1)], [("b", 1)], [("c", 1)], [("a", 1), ("c", 1)])
    }
    assert len(answers) == 5


def test_merged_decoding_computes_the_same_and_restores_the_base_bit_for_bit(
    store: SkillStore, loud: dict[str, Path], fresh_base: Any, tmp_path: Path
) -> None:
    fill(store, loud, tmp_path)
    residency = Residency(fresh_base.model, store, max_hot=4)
    merged = LocalChatModel(fresh_base, residency)  # merge_for_decode=True, the default
    plain = LocalChatModel(fresh_base, residency, merge_for_decode=False)
    original = {n: p.detach().clone() for n, p in fresh_base.model.named_parameters()}
    ids = torch.tensor([fresh_base.tokenizer("hello there", add_special_tokens=False)["input_ids"]])

    for skills in ([("a", 1)], [("a", 1), ("b", 1), ("c", 1)]):
        name = merged.adapter_for(skills)
        with residency.merged(name) as model, torch.no_grad():
            folded = model(input_ids=ids).logits
        assert residency.merged_adapter == name
        with plain.activated(skills) as model, torch.no_grad():  # restores, then peft's LoRA path
            unfolded = model(input_ids=ids).logits
        assert residency.merged_adapter is None
        torch.testing.assert_close(folded, unfolded, rtol=1e-4, atol=1e-4)
        assert not torch.equal(folded, model.get_base_model()(input_ids=ids).logits)  # the skills did something

    # consecutive turns with the same skills merge once; anything else restores the exact base first
    merges = residency.stats.merges
    merged.generate(chat("ping"), skills=[("b", 1)], max_new_tokens=3)  # a one-off: peft's LoRA path, no merge
    assert residency.stats.merges == merges and residency.merged_adapter is None
    merged.generate(chat("pong"), skills=[("b", 1)], max_new_tokens=3)  # the next turn: merged
    merged.generate(chat("ping"), skills=[("b", 1)], max_new_tokens=3)  # and it stays merged
    assert residency.stats.merges == merges + 1 and residency.merged_adapter is not None
    merged.generate(chat("ping"), max_new_tokens=3)  # base only
    assert residency.merged_adapter is None
    base_weights = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in residency.model.named_parameters()
        if "lora_" not in n
    }
    assert base_weights.keys() == original.keys()
    assert all(torch.equal(base_weights[n], original[n]) for n in original)


def test_merging_something_not_loaded_is_refused(local: LocalChatModel) -> None:
    with pytest.raises(UserError, match="not loaded"), local.residency.merged("sk_nothing_r1"):
        pass
