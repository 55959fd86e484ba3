"""Training an adapter inside the composition it will run in (`train_lora(under=...)`, the recipe's `compose_with`):
the companions stay frozen and active beneath it, and its replay is their answer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from memory import HashingEmbedder, InMemoryBuffer, Trajectory
from memory.consolidate import ConsolidationConfig, Consolidator
from memory.retrain import training_examples
from skills import ChatExample, Residency, SkillStore, TrainConfig, UserError, train_lora
from skills.errors import SkillNotFoundError
from skills.generation import generate
from skills.reader import read_safetensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = [ChatExample.from_pair("ping", "pong"), ChatExample.from_pair("2+2?", "4")]
STEPS = TrainConfig(steps=2, batch_size=2, learning_rate=1e-2, seed=0)
TOOL_TASK = [{"role": "system", "content": "You have a search tool."}, {"role": "user", "content": "find cats"}]


@pytest.fixture
def world(tmp_path: Path, fresh_base: Any, loud: dict[str, Path]) -> dict[str, Any]:
    """A store with one shared companion skill (a loud adapter: it changes what the base says)."""
    store = SkillStore(tmp_path / "skills", base_fingerprint=fresh_base.fingerprint)
    shutil.copytree(loud["a"], tmp_path / "habit")
    store.create("habit", tmp_path / "habit", kind="tool_habit")
    residency = Residency(fresh_base.model, store, max_hot=4)
    return {"store": store, "residency": residency, "base": fresh_base, "tmp": tmp_path, "loud": loud}


def first_losses(model: Any, tokenizer: Any, out: Path, under: list[str]) -> list[float]:
    losses: list[float] = []
    record = lambda step, loss: losses.append(loss)  # noqa: E731
    train_lora(model, tokenizer, EXAMPLES, out, config=STEPS, progress=False, under=under, on_step=record)
    return losses


def test_training_beneath_a_companion_sees_it_and_leaves_it_unchanged(world: dict[str, Any]) -> None:
    residency, tokenizer = world["residency"], world["base"].tokenizer
    name = residency.load("habit")
    model = residency.model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if f".{name}." in n}
    alone = first_losses(model, tokenizer, world["tmp"] / "alone", [])
    beneath = first_losses(model, tokenizer, world["tmp"] / "beneath", [name])
    assert alone[0] != pytest.approx(beneath[0], rel=1e-3), "the companion's update is part of the forward"
    after = dict(model.named_parameters())
    assert all(bool((after[n] == p).all()) and not after[n].requires_grad for n, p in before.items())
    saved = read_safetensors(world["tmp"] / "beneath" / "adapter_model.safetensors", label="saved")
    assert saved and all(name not in key for key in saved), "only the trained adapter is saved"
    assert set(model.peft_config) == {name}, "the trained adapter is gone from the model afterwards"


def test_training_beneath_an_adapter_that_is_not_loaded_is_refused(world: dict[str, Any]) -> None:
    with pytest.raises(UserError, match="cannot train beneath"):
        train_lora(world["base"].model, world["base"].tokenizer, EXAMPLES, world["tmp"] / "x", under=["sk_none_r1"])


def test_a_recipe_with_companions_replays_their_answers_and_records_them(world: dict[str, Any]) -> None:
    store, residency, base = world["store"], world["residency"], world["base"]
    recipe = ConsolidationConfig(
        min_episodes=4, replay=2, epochs=1.0, min_steps=2, max_steps=2, max_new_tokens=6, negative_share=0.0,
        compose_with=["habit"], composed_replay=[TOOL_TASK],
    )  # fmt: skip
    episodes = [Trajectory.demonstration(f"ping number {i}", f"pong {i}") for i in range(5)]
    shutil.copytree(world["loud"]["b"], world["tmp"] / "other")
    store.create("other", world["tmp"] / "other", kind="style")
    residency.activate("other")  # whatever ran last: the replay is still answered by base + habit
    examples = training_examples(recipe, episodes, residency, base.tokenizer)
    replayed = {e.source_id: e.messages[-1].content for e in examples if (e.source_id or "").startswith("replay:")}
    tool_reply = replayed[f"replay:{len(replayed) - 1}"]  # the composed replay follows the off-task prompts
    residency.activate_adapter([residency.load("habit")])
    assert tool_reply == generate(residency.model, base.tokenizer, [TOOL_TASK], max_new_tokens=6)[0]
    with residency.base_only() as model:
        assert tool_reply != generate(model, base.tokenizer, [TOOL_TASK], max_new_tokens=6)[0], "not the base's"

    buffer = InMemoryBuffer(HashingEmbedder())
    buffer.add_many(episodes)
    consolidator = Consolidator(buffer, store, residency, base.tokenizer, config=recipe, progress=False)
    (report,) = consolidator.run()
    record = store.revision(report.skill)
    assert record.provenance.training["under"] == ["sk_habit_r1"]
    assert record.evaluation.details["config"]["compose_with"] == ["habit"], "a forget rebuilds the same way"


def test_a_rebuild_whose_companion_is_gone_trains_alone(world: dict[str, Any]) -> None:
    residency, base = world["residency"], world["base"]
    recipe = ConsolidationConfig(replay=2, max_new_tokens=6, negative_share=0.0, compose_with=["ghost"])
    episodes = [Trajectory.demonstration(f"ping number {i}", f"pong {i}") for i in range(3)]
    examples = training_examples(recipe, episodes, residency, base.tokenizer)  # forgetting never waits for a skill
    replayed = [e.messages[-1].content for e in examples if (e.source_id or "").startswith("replay:")]
    with residency.base_only() as model:
        asked = [e for e in examples if (e.source_id or "").startswith("replay:")]
        chats = [[m.model_dump() for m in e.messages[:-1]] for e in asked]
        assert replayed == generate(model, base.tokenizer, chats, max_new_tokens=6)
    consolidator = Consolidator(InMemoryBuffer(HashingEmbedder()), world["store"], residency, base.tokenizer)
    consolidator.config = recipe.model_copy(update={"min_episodes": 1})
    consolidator.buffer.add_many(episodes)
    with pytest.raises(SkillNotFoundError):  # a consolidation asked for it: refused before any training
        consolidator.run()
