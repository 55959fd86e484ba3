"""The training loop: targets, learning, determinism, leaving the base as it was, and PEFT's own on-disk format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from pydantic import ValidationError
from safetensors.torch import load_file

from agent.testing import tiny_base
from skills import (
    ChatExample,
    ChatMessage,
    LoraSpec,
    Residency,
    SkillStore,
    TrainConfig,
    TrainResult,
    UserError,
    train_lora,
)
from skills.train import IGNORE_INDEX, tokenize_chat

# Pinned threads: training is bitwise reproducible for a given seed *and thread count*; unpinned, FairShare may change
# the threads between steps with the machine's load (skills/threads.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

Train = Callable[..., TrainResult]
Datasets = dict[str, list[ChatExample]]
PROBE = "<|im_start|>user\nping<|im_end|>\n<|im_start|>assistant\n"


def probe_ids(tokenizer: Any) -> torch.Tensor:
    return torch.tensor([tokenizer(PROBE, add_special_tokens=False)["input_ids"]])  # (1, seq)


@torch.no_grad()
def logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits  # (1, seq, vocab)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def same_weights(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> bool:
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def assert_plain_base(model: Any) -> None:
    """No peft layer, no LoRA parameter, nothing trainable: the model is the bare base again."""
    assert not isinstance(model, PeftModel)
    assert not any(isinstance(module, BaseTunerLayer) for module in model.modules())
    assert not any("lora_" in name for name, _ in model.named_parameters())
    assert not any(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------------ tokenize_chat


def _spans(labels: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of labelled (non-ignored) positions."""
    spans, start = [], None
    for index, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = index
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, index))
            start = None
    return spans


def test_tokenize_chat_labels_only_assistant_turns(tiny: Any) -> None:
    tokenizer = tiny.tokenizer
    messages = [
        ChatMessage(role="system", content="You are terse."),
        ChatMessage(role="user", content="héllo  wörld"),
        ChatMessage(role="assistant", content=" first\n  answer "),
        ChatMessage(role="user", content="and again?"),
        ChatMessage(role="assistant", content='{"tool": "x"}'),
    ]
    ids, labels = tokenize_chat(tokenizer, messages, max_length=4096)
    assert len(ids) == len(labels)
    # the ids are exactly the rendered conversation
    rendered = tokenizer.apply_chat_template([m.model_dump() for m in messages], tokenize=False)
    assert tokenizer.decode(ids) == rendered
    # each label is either ignored or the token itself
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels, strict=True))
    # the labelled spans are the assistant contents with their end-of-turn marker, nothing else
    spans = _spans(labels)
    assert [tokenizer.decode(ids[a:b]) for a, b in spans] == [
        " first\n  answer <|im_end|>\n",
        '{"tool": "x"}<|im_end|>\n',
    ]
    # and what precedes each target (system, user, the generation prompt) is ignored
    for start, _ in spans:
        assert tokenizer.decode(ids[:start]).endswith("<|im_start|>assistant\n")
    ignored = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label == IGNORE_INDEX])
    assert "You are terse." in ignored and "héllo  wörld" in ignored and "and again?" in ignored


def test_one_chat_message_from_prompt_to_training_set() -> None:
    import skills.train
    from skills.messages import ChatMessage as Message

    assert ChatMessage is Message is skills.train.ChatMessage, "one class, wherever it is imported from"
    recorded = {"role": "tool", "content": 3, "name": "calculator"}  # what an old or hand-made trajectory may hold
    assert Message.from_record(recorded) == Message.tool("3")
    assert Message.user("hi").model_dump() == {"role": "user", "content": "hi"}
    with pytest.raises(ValidationError):
        Message.from_record({"role": "narrator", "content": "x"})


def test_tokenize_chat_without_assistant_has_no_targets(tiny: Any) -> None:
    messages = [ChatMessage(role="system", content="s"), ChatMessage(role="user", content="u")]
    ids, labels = tokenize_chat(tiny.tokenizer, messages, max_length=4096)
    assert ids and all(label == IGNORE_INDEX for label in labels)


def test_tokenize_chat_truncates_from_the_left(tiny: Any) -> None:
    messages = [ChatMessage(role="user", content="u" * 200), ChatMessage(role="assistant", content="answer")]
    full_ids, full_labels = tokenize_chat(tiny.tokenizer, messages, max_length=4096)
    ids, labels = tokenize_chat(tiny.tokenizer, messages, max_length=20)
    assert ids == full_ids[-20:] and labels == full_labels[-20:]
    assert tiny.tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]) == (
        "answer<|im_end|>\n"
    )


def test_train_refuses_data_without_targets(tiny: Any, tmp_path: Path) -> None:
    with pytest.raises(UserError):
        train_lora(tiny.model, tiny.tokenizer, [], tmp_path / "a", progress=False)
    # cut from the left, the last 8 tokens are the trailing user turn: no assistant token is left
    trailing_user = ChatExample(
        messages=(
            ChatMessage(role="user", content="q"),
            ChatMessage(role="assistant", content="y"),
            ChatMessage(role="user", content="x" * 300),
        )
    )
    with pytest.raises(UserError, match="max_length"):
        train_lora(
            tiny.model,
            tiny.tokenizer,
            [trailing_user],
            tmp_path / "b",
            config=TrainConfig(max_length=8),
            progress=False,
        )
    assert_plain_base(tiny.model)


# ------------------------------------------------------------------------------------------------ train_lora


def test_loss_goes_down_on_memorisable_data(datasets: Datasets, train_adapter: Train) -> None:
    config = TrainConfig(steps=30, batch_size=2, learning_rate=5e-3, seed=0)
    result = train_adapter(datasets["alpha"], config=config)
    assert len(result.losses) == 30 and result.steps == 30
    assert all(torch.isfinite(torch.tensor(result.losses)))
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first - 0.5, result.losses
    # what the result reports matches what was trained and saved
    saved = weights(result.adapter_dir)
    assert result.trainable_params == sum(t.numel() for t in saved.values()) > 0
    assert 0 < result.target_tokens < result.tokens
    assert result.examples == 2 and result.data_hash.startswith("sha256:")
    assert result.provenance.source == "trained" and result.provenance.n_examples == 2
    assert result.provenance.training["steps"] == 30 and result.provenance.training["init_from"] is None
    assert {p.name for p in result.adapter_dir.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    # per-step figures (what `habitloop bench --only training` reads)
    assert len(result.step_seconds) == len(result.step_tokens) == 30
    assert sum(result.step_tokens) == result.tokens and all(s > 0 for s in result.step_seconds)
    assert result.step_threads == [1] * 30  # pinned: FairShare leaves them alone


def test_rounding_batch_shapes_up_leaves_the_training_as_it_was(
    datasets: Datasets, quick: TrainConfig, train_adapter: Train
) -> None:
    """Padding each batch's width and its target rows to a multiple of 32 only adds ignored positions: the losses
    and the trained weights are those of batches padded to their longest example (in fp32: bf16 autocast rounds
    differently with each matmul shape)."""
    data = datasets["alpha"] + datasets["gamma"]  # examples of different lengths in one batch
    fp32 = quick.model_copy(update={"batch_size": 3, "bf16_autocast": False})
    exact = train_adapter(data, config=fp32.model_copy(update={"pad_to_multiple": 1}))
    rounded = train_adapter(data, config=fp32.model_copy(update={"pad_to_multiple": 32}))
    assert rounded.tokens == exact.tokens and rounded.target_tokens == exact.target_tokens  # padding not counted
    assert rounded.losses == pytest.approx(exact.losses, abs=1e-4)
    one, two = weights(exact.adapter_dir), weights(rounded.adapter_dir)
    assert all(torch.allclose(one[k], two[k], atol=1e-4) for k in one)


def test_packing_examples_into_rows_leaves_the_training_as_it_was(
    datasets: Datasets, quick: TrainConfig, train_adapter: Train
) -> None:
    """Packed rows (each example attending only to itself) are another layout of the same batches: the losses and
    the trained weights are those of padded rows (fp32, as above)."""
    data = datasets["alpha"] + datasets["gamma"]
    fp32 = quick.model_copy(update={"batch_size": 3, "bf16_autocast": False, "pad_to_multiple": 1})
    padded = train_adapter(data, config=fp32)
    packed = train_adapter(data, config=fp32.model_copy(update={"pack_width": 512}))
    assert packed.tokens == padded.tokens and packed.target_tokens == padded.target_tokens
    assert packed.losses == pytest.approx(padded.losses, abs=1e-4)
    one, two = weights(padded.adapter_dir), weights(packed.adapter_dir)
    assert all(torch.allclose(one[k], two[k], atol=1e-4) for k in one)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(2, 40), min_size=1, max_size=8),
    pack_width=st.sampled_from([0, 16, 48, 100]),
    multiple=st.sampled_from([1, 8]),
)
def test_a_batch_layout_holds_every_example_once_with_its_own_positions(
    lengths: list[int], pack_width: int, multiple: int
) -> None:
    from skills.train import make_batch

    features = [([100 * e + t + 1 for t in range(n)], [IGNORE_INDEX] + [7] * (n - 1)) for e, n in enumerate(lengths)]
    config = TrainConfig(pack_width=pack_width, pad_to_multiple=multiple)
    batch = make_batch(features, pad_id=0, config=config)
    rows, width = batch.input_ids.shape
    assert width % multiple == 0 and batch.tokens == sum(lengths)
    assert (batch.attention_mask is None) == bool(pack_width) == (batch.position_ids is not None)
    if not pack_width:
        assert rows == len(lengths)
        return
    found = []
    for r in range(rows):  # each example: its ids in order, positions 0..n-1, first label ignored
        ids, labels, positions = batch.input_ids[r].tolist(), batch.labels[r].tolist(), batch.position_ids[r].tolist()
        at = 0
        while at < width and ids[at] != 0:
            e = (ids[at] - 1) // 100  # ids are 100 * example + position + 1; 0 is padding
            n = lengths[e]
            assert ids[at : at + n] == features[e][0] and positions[at : at + n] == list(range(n))
            assert labels[at] == IGNORE_INDEX and labels[at + 1 : at + n] == [7] * (n - 1)
            found.append(e)
            at += n
        assert at == width or positions[at] == 0  # the padding starts a sequence of its own
        assert set(labels[at:]) <= {IGNORE_INDEX}
        assert at <= max(pack_width, max(lengths))  # over pack_width only for an example alone in its row
    assert sorted(found) == list(range(len(lengths)))


def test_training_is_deterministic_given_the_seed(quick: TrainConfig, train_adapter: Train) -> None:
    one = train_adapter(config=quick)
    two = train_adapter(config=quick)
    other = train_adapter(config=quick.model_copy(update={"seed": 1}))
    assert one.losses == two.losses
    assert same_weights(weights(one.adapter_dir), weights(two.adapter_dir))
    assert not same_weights(weights(one.adapter_dir), weights(other.adapter_dir))
    assert one.data_hash == other.data_hash  # same data, different seed


def test_data_hash_depends_on_the_data(datasets: Datasets, quick: TrainConfig, train_adapter: Train) -> None:
    one = train_adapter(datasets["alpha"], config=quick.model_copy(update={"steps": 1}))
    two = train_adapter(datasets["beta"], config=quick.model_copy(update={"steps": 1}))
    assert one.data_hash != two.data_hash


def test_training_leaves_the_base_unchanged(quick: TrainConfig, tiny: Any, train_adapter: Train) -> None:
    ids = probe_ids(tiny.tokenizer)
    before = logits(tiny.model, ids)
    params_before = {name: p.detach().clone() for name, p in tiny.model.named_parameters()}
    train_adapter(config=quick)
    assert_plain_base(tiny.model)
    assert not tiny.model.training
    assert torch.equal(logits(tiny.model, ids), before)
    after = dict(tiny.model.named_parameters())
    assert after.keys() == params_before.keys()
    assert all(torch.equal(after[name], value) for name, value in params_before.items())


def test_a_failed_training_also_leaves_the_base_unchanged(
    datasets: Datasets, quick: TrainConfig, tiny: Any, tmp_path: Path, train_adapter: Train
) -> None:
    deeper = tiny_base(layers=3)
    bigger = train_lora(
        deeper.model, deeper.tokenizer, datasets["alpha"], tmp_path / "deep", config=quick, progress=False
    )
    ids = probe_ids(tiny.tokenizer)
    before = logits(tiny.model, ids)
    with pytest.raises(UserError, match="does not fit|not a LoRA tensor of this adapter"):
        train_adapter(init_from=bigger.adapter_dir)
    assert_plain_base(tiny.model)
    assert torch.equal(logits(tiny.model, ids), before)


def test_init_from_an_adapter_of_another_width_is_a_user_error(
    datasets: Datasets, quick: TrainConfig, tiny: Any, tmp_path: Path, train_adapter: Train
) -> None:
    narrow = tiny_base(hidden_size=32)
    other = train_lora(narrow.model, narrow.tokenizer, datasets["alpha"], tmp_path / "w", config=quick, progress=False)
    try:
        with pytest.raises(UserError, match="does not fit|not a LoRA tensor of this adapter|shape"):
            train_adapter(init_from=other.adapter_dir)
    finally:
        assert_plain_base(tiny.model)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # inside peft, not ours
def test_saved_adapter_is_peft_format_and_matches_residency(
    datasets: Datasets, quick: TrainConfig, store: SkillStore, fresh_base: Any, train_adapter: Train
) -> None:
    result = train_adapter(datasets["beta"], config=quick)
    store.create("roundtrip", result.adapter_dir, kind="style")
    ids = probe_ids(fresh_base.tokenizer)
    base_logits = logits(fresh_base.model, ids)

    residency = Residency(fresh_base.model, store)
    residency.activate("roundtrip")
    ours = logits(residency.model, ids)
    assert not torch.allclose(ours, base_logits, atol=1e-4)  # the adapter does change the output

    for folder in (result.adapter_dir, store.revision_dir("roundtrip")):
        reference = PeftModel.from_pretrained(tiny_base().model, str(folder))
        reference.eval()
        theirs = logits(reference, ids)
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-6), (ours - theirs).abs().max()


def test_continuing_from_a_revision_starts_from_its_weights(
    datasets: Datasets, store: SkillStore, train_adapter: Train
) -> None:
    data = datasets["alpha"]
    recipe = TrainConfig(steps=15, batch_size=2, learning_rate=5e-3, lora=LoraSpec(r=4, alpha=8))
    first = train_adapter(data, config=recipe)
    store.create("cont", first.adapter_dir, kind="style", provenance=first.provenance)

    short = TrainConfig(steps=3, batch_size=2, learning_rate=5e-3)  # default LoraSpec (r=8): ignored when continuing
    init = store.revision_dir("cont")
    continued = train_adapter(data, config=short, init_from=init)
    fresh = train_adapter(data, config=short)
    assert continued.losses[0] < fresh.losses[0] - 0.3, (continued.losses, fresh.losses)
    assert continued.losses[0] < first.losses[0]

    assert continued.config.lora == LoraSpec.from_adapter_config(store.read_adapter("cont").config)
    assert continued.config.lora.r == 4
    assert continued.provenance.training["init_from"] == str(init)
    assert fresh.provenance.training["init_from"] is None

    record = store.add_revision("cont", continued.adapter_dir, provenance=continued.provenance)
    assert record.parent == 1
    assert record.lora.r == 4
    assert store.revision("cont").provenance.training["init_from"] == str(init)


def test_training_next_to_hot_skills_leaves_them_intact(
    datasets: Datasets,
    quick: TrainConfig,
    store: SkillStore,
    fresh_base: Any,
    adapter: Callable[[str], Path],
    train_adapter: Train,
    tmp_path: Path,
) -> None:
    store.create("a", adapter("alpha"), kind="style")
    store.create("b", adapter("beta"), kind="style")
    residency = Residency(fresh_base.model, store, max_hot=4)
    ids = probe_ids(fresh_base.tokenizer)
    residency.activate("a")
    logits_a = logits(residency.model, ids)
    name_b = residency.activate("b")
    logits_b = logits(residency.model, ids)
    assert not torch.allclose(logits_a, logits_b)
    adapters_before = set(residency.model.peft_config)
    stats_before = residency.stats.model_copy()

    result = train_lora(
        residency.model,
        fresh_base.tokenizer,
        datasets["gamma"],
        tmp_path / "next-to",
        config=quick,
        progress=False,
    )

    assert set(residency.model.peft_config) == adapters_before
    assert residency.model.active_adapter == name_b
    assert not any(p.requires_grad for p in residency.model.parameters())
    assert not residency.model.training
    assert torch.equal(logits(residency.model, ids), logits_b)
    residency.activate("a")
    assert torch.equal(logits(residency.model, ids), logits_a)
    assert residency.stats.disk_loads == stats_before.disk_loads
    assert residency.stats.model_loads == stats_before.model_loads
    with residency.base_only() as base:
        assert torch.equal(logits(base, ids), logits(tiny_base().model, ids))

    # the other adapters took no part in training: the result equals training on the bare base
    alone = train_adapter(datasets["gamma"], config=quick)
    assert result.losses == pytest.approx(alone.losses, abs=1e-5)
    trained, reference = weights(result.adapter_dir), weights(alone.adapter_dir)
    assert trained.keys() == reference.keys()
    assert all(torch.allclose(trained[k], reference[k], atol=1e-6) for k in trained)


def test_target_loss_equals_the_models_own_loss(tiny: Any) -> None:
    """The loss projects only target positions onto the vocabulary; it must be the very number transformers gives."""
    import torch

    from skills.train import target_loss, tokenize_chat

    example = ChatExample.from_pair("What is 2+2?", "4, of course.", system="Be brief.")
    ids, labels = tokenize_chat(tiny.tokenizer, example.messages, 512)
    input_ids, label_ids = torch.tensor([ids]), torch.tensor([labels])
    attention = torch.ones_like(input_ids)
    with torch.no_grad():
        ours = target_loss(tiny.model, input_ids, attention, label_ids)
        theirs = tiny.model(input_ids=input_ids, attention_mask=attention, labels=label_ids).loss
    assert torch.allclose(ours, theirs, atol=1e-5), (ours, theirs)
    with torch.no_grad():  # target rows padded up with ignored positions: the same mean
        padded = target_loss(tiny.model, input_ids, attention, label_ids, pad_to_multiple=7)
    assert torch.allclose(padded, theirs, atol=1e-5), (padded, theirs)
