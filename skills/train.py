"""The LoRA training loop: chat examples in, a PEFT adapter folder out. One function, readable top to bottom.

Loss is taken on assistant tokens only (the model should learn to answer, not to predict the user). Training runs on
the shared base in place: a temporary adapter is added next to whatever adapters are loaded, trained, saved, and
removed again, so the base and the other skills are left exactly as they were.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from skills.adapter_check import check_adapter
from skills.errors import UserError
from skills.files import ADAPTER_WEIGHTS, check_adapter_dir, library_versions, read_safetensors
from skills.heap import return_free_heap
from skills.manifest import LoraSpec, Provenance
from skills.messages import ChatMessage
from skills.threads import share_cores

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips


class ChatExample(BaseModel):
    """One training conversation; every assistant turn in it is a target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[ChatMessage, ...] = Field(min_length=2)
    source_id: str | None = Field(None, description="e.g. the episode id this example came from")

    @classmethod
    def from_pair(cls, prompt: str, answer: str, *, system: str | None = None, source_id: str | None = None):
        messages = [ChatMessage.user(prompt), ChatMessage.assistant(answer)]
        if system is not None:
            messages.insert(0, ChatMessage.system(system))
        return cls(messages=tuple(messages), source_id=source_id)


class TrainConfig(BaseModel):
    """The recipe; it is stored in the revision's provenance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lora: LoraSpec = Field(default_factory=LoraSpec)
    steps: int = Field(16, ge=1, description="optimizer steps")
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(512, ge=8, description="tokens per example; longer examples are cut from the left")
    seed: int = 0
    gradient_checkpointing: bool = Field(
        True,
        description="recompute each layer's activations in the backward pass instead of keeping them: much less "
        "memory for some more compute",
    )
    bf16_autocast: bool = Field(
        True,
        description="run forward passes under bfloat16 autocast (LoRA weights and optimizer stay fp32); measured "
        "1.7x the training tokens/s of fp32 on 2 CPU cores",
    )
    pad_to_multiple: int = Field(
        32,
        ge=1,
        description="pad each batch's width, and its count of target positions, up to a multiple of this (1: no "
        "rounding): a few tensor shapes instead of a new one every step, so the allocator reuses its blocks and "
        "oneDNN its kernels (see docs/training-memory.md)",
    )
    pack_width: int = Field(
        0,
        ge=0,
        description="0: each example of a step is a row of its own, right-padded (batches are length-bucketed). "
        "N: the step's examples are packed into as few rows of up to N tokens as fit, each example attending only "
        "to itself; the same examples and loss, less padding, longer attention rows (measured in "
        "docs/training-memory.md)",
    )


class TrainResult(BaseModel):
    """What a training run produced and measured."""

    adapter_dir: Path
    losses: list[float]
    steps: int
    examples: int
    tokens: int = Field(description="tokens processed (all positions, padding excluded)")
    target_tokens: int = Field(description="assistant tokens the loss was taken on")
    seconds: float
    tokens_per_second: float
    step_seconds: list[float] = Field(default_factory=list, description="wall seconds of each optimizer step")
    step_tokens: list[int] = Field(default_factory=list, description="tokens of each step (padding excluded)")
    step_threads: list[int] = Field(
        default_factory=list, description="torch threads after each step (they follow the free cores: FairShare)"
    )
    trainable_params: int
    data_hash: str
    config: TrainConfig
    provenance: Provenance


def data_hash(examples: Sequence[ChatExample]) -> str:
    """sha256 of the canonical JSON of the examples, in order: the data half of a revision's provenance."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps(example.model_dump(mode="json")["messages"], sort_keys=True).encode())
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def tokenize_chat(tokenizer: Any, messages: Sequence[ChatMessage], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels for one conversation, labels = ids on assistant turns and IGNORE_INDEX elsewhere.

    The conversation is rendered with the tokenizer's own chat template, one turn at a time: the text an assistant
    turn adds after the generation prompt (its content and end-of-turn marker) is the target. Rendering prefixes
    keeps the exact text the model sees at inference time, whatever the template.
    """
    chat = [m.model_dump() for m in messages]
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for index, message in enumerate(chat):
        if message["role"] == "assistant":
            prompt = tokenizer.apply_chat_template(chat[:index], tokenize=False, add_generation_prompt=True)
            segments = [(prompt[len(rendered) :], False)]
        else:
            prompt = rendered
            segments = []
        full = tokenizer.apply_chat_template(chat[: index + 1], tokenize=False)
        if not full.startswith(prompt):
            raise UserError("the chat template does not render conversations as prefixes of each other")
        segments.append((full[len(prompt) :], message["role"] == "assistant"))
        for text, is_target in segments:
            if not text:
                continue
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids.extend(piece)
            labels.extend(piece if is_target else [IGNORE_INDEX] * len(piece))
        rendered = full
    return ids[-max_length:], labels[-max_length:]


@contextmanager
def temporary_adapter(model: Any, lora: LoraSpec, under: Sequence[str] = ()) -> Iterator[tuple[Any, str]]:
    """Add a fresh LoRA adapter to `model` for the duration of the block; yield (peft_model, adapter_name).

    `model` is either a plain transformers model (it is wrapped with `get_peft_model`, and unwrapped again on exit,
    leaving the original modules in place) or a `PeftModel` already holding other skills (the adapter is added next
    to them and deleted on exit, and the previously active adapter is restored). `under` names adapters of that
    PeftModel that stay active beneath the new one, frozen: their updates and the new one's add up in every forward.
    """
    from peft import PeftModel, get_peft_model

    name = f"sk_train_{uuid.uuid4().hex[:8]}"  # never a substring of peft's "lora_" prefix
    config = lora.to_peft()
    if under and not (isinstance(model, PeftModel) and all(u in model.peft_config for u in under)):
        raise UserError(f"cannot train beneath {list(under)}: not loaded in the model", hint="load them first")
    if isinstance(model, PeftModel):
        previous = model.active_adapter
        model.add_adapter(name, config)
        if under:
            tuner: Any = model.base_model
            tuner.set_adapter([*under, name])  # several active adapters: their updates add up
            model.active_adapter = name  # PeftModel's own forward looks one name's config up
            model.set_requires_grad(list(under), requires_grad=False)
        else:
            model.set_adapter(name)
        try:
            yield model, name
        finally:
            if previous in model.peft_config:
                model.set_adapter(previous)
            model.delete_adapter(name)
            model.requires_grad_(False)
    else:
        with warnings.catch_warnings():
            # peft asks transformers a deprecated question inside get_peft_model; not ours to fix, not news to users
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(model, config, adapter_name=name)
        try:
            yield peft_model, name
        finally:
            peft_model.unload()  # puts the original Linear modules back into `model`
            model.requires_grad_(False)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def target_loss(
    model: Any, input_ids: Any, attention_mask: Any, labels: Any, *, pad_to_multiple: int = 1, position_ids: Any = None
) -> Any:
    """Mean next-token cross-entropy over the target (assistant) positions only.

    The same number as `model(..., labels=labels).loss`, but the vocabulary projection runs only where there is a
    target: with a 49k vocabulary and mostly prompt tokens, projecting every position was most of a step's compute
    and memory (logits: batch x length x 49152 floats, several copies for the loss and its gradient). The target
    rows are padded with ignored positions up to `pad_to_multiple`, so the projection's shape repeats across steps.
    Packed rows (`attention_mask` None, `position_ids` restarting at 0 for each example) keep each example's attention
    to itself: transformers builds the block-diagonal causal mask from the position ids.
    """
    import torch
    import torch.nn.functional as F

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = causal.get_decoder(), causal.get_output_embeddings()
    hidden = decoder(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
    ).last_hidden_state  # (batch, length, hidden)
    targets = labels[:, 1:].reshape(-1)  # position t predicts token t+1
    keep = targets != IGNORE_INDEX  # (batch * (length - 1),)
    rows = min(round_up(int(keep.sum()), pad_to_multiple), keep.numel())
    chosen = torch.argsort((~keep).to(torch.int8), stable=True)[:rows]  # every target, then ignored filler
    logits = head(hidden[:, :-1].reshape(-1, hidden.shape[-1])[chosen])  # (rows, vocab): where there is a target
    return F.cross_entropy(logits.float(), targets[chosen], ignore_index=IGNORE_INDEX)


def save_adapter(peft_model: Any, adapter_name: str, out_dir: Path) -> Path:
    """Write one adapter in PEFT's own format (adapter_config.json + adapter_model.safetensors)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(out_dir / ADAPTER_WEIGHTS))
    config = peft_model.peft_config[adapter_name]
    config.inference_mode = True
    config.save_pretrained(str(out_dir))
    return out_dir


class Batch(NamedTuple):
    """One step's tensors, (rows, width) each; `attention_mask` None and `position_ids` set when packed."""

    input_ids: Any
    labels: Any
    attention_mask: Any
    position_ids: Any
    tokens: int  # real tokens, padding excluded

    def to(self, device: Any) -> Batch:
        def move(t: Any) -> Any:
            return None if t is None else t.to(device)

        return Batch(
            move(self.input_ids), move(self.labels), move(self.attention_mask), move(self.position_ids), self.tokens
        )


def _rows(lengths: Sequence[int], pack_width: int) -> list[list[int]]:
    """Which examples share a row: one each (pack_width 0), or first-fit, longest first, into rows of pack_width."""
    if not pack_width:
        return [[i] for i in range(len(lengths))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = next((r for r, free in enumerate(room) if lengths[i] <= free), None)
        if fits is None:  # a new row; an example longer than pack_width gets one of its own
            rows.append([i])
            room.append(pack_width - lengths[i])
        else:
            rows[fits].append(i)
            room[fits] -= lengths[i]
    return rows


def make_batch(features: Sequence[tuple[list[int], list[int]]], pad_id: int, config: TrainConfig) -> Batch:
    """Lay one step's examples out as tensors: padded rows, or packed rows (see `TrainConfig.pack_width`).

    Packed, every example's positions restart at 0 and its first label is ignored (nothing predicts one example's
    first token from the one before); the padding at a row's end is a sequence of its own, all ignored.
    """
    import torch

    rows = _rows([len(ids) for ids, _ in features], config.pack_width)
    width = round_up(max(sum(len(features[i][0]) for i in row) for row in rows), config.pad_to_multiple)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            ids, labs = features[i]
            input_ids[r, at : at + len(ids)] = torch.tensor(ids)
            labels[r, at : at + len(ids)] = torch.tensor(labs)
            labels[r, at] = IGNORE_INDEX
            positions[r, at : at + len(ids)] = torch.arange(len(ids))
            attention[r, at : at + len(ids)] = 1
            at += len(ids)
        positions[r, at:] = torch.arange(width - at)
    tokens = int(attention.sum())
    if config.pack_width:
        return Batch(input_ids, labels, None, positions, tokens)
    return Batch(input_ids, labels, attention, None, tokens)


def _batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless shuffled epochs of example indices, in batches of similar length (less padding, same data).

    Each epoch is shuffled, cut into windows of 8 batches, each window sorted by length and cut into batches, and
    the batches shuffled again, so batch composition still varies between epochs.
    """
    window = batch_size * 8
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        yield from batches


def set_checkpointing(model: Any, *, enabled: bool) -> None:
    """Non-reentrant activation checkpointing on or off. transformers < 5.20 (vLLM's CPU venv, `make vllm-setup`)
    names it `gradient_checkpointing_*`."""
    if not hasattr(model, "activation_checkpointing_enable"):
        if enabled:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_disable()
    elif enabled:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.activation_checkpointing_disable()


def train_lora(
    model: Any,
    tokenizer: Any,
    examples: Sequence[ChatExample],
    out_dir: Path | str,
    *,
    config: TrainConfig | None = None,
    init_from: Path | str | None = None,
    episode_ids: Sequence[str] = (),
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    under: Sequence[str] = (),
) -> TrainResult:
    """Train a LoRA adapter on chat `examples` and save it to `out_dir` (PEFT format). Deterministic given the seed.

    `init_from` is an adapter folder (e.g. the skill's current revision) to continue training from; its LoRA shape
    is then used instead of `config.lora`. `model` may already hold other adapters (see `temporary_adapter`);
    `under` names those to keep active and frozen beneath the trained one, so it learns what to add to them (an
    adapter that will be composed with them at run time, trained in that composition).
    `on_step(step, loss)` is called after every optimizer step (progress reporting, tests that interrupt training).
    """
    import torch
    from peft import set_peft_model_state_dict
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    if not examples:
        raise UserError("train_lora needs at least one example")
    out_dir = Path(out_dir)
    lora = config.lora
    init_state = None
    if init_from is not None:
        init_config = check_adapter_dir(Path(init_from), label=f"init adapter {init_from}")
        lora = LoraSpec.from_adapter_config(init_config)
        init_state = read_safetensors(Path(init_from) / ADAPTER_WEIGHTS, label=f"init adapter {init_from}")
        # the same check as every load: a folder holding more than its LoRA tensors could overwrite the base's weights
        check_adapter(init_config, init_state, label=f"init adapter {init_from}", base=model)

    # --- data: tokenize once, keep only examples with at least one target token
    features = [tokenize_chat(tokenizer, ex.messages, config.max_length) for ex in examples]
    features = [f for f in features if any(label != IGNORE_INDEX for label in f[1])]
    if not features:
        raise UserError("no example has an assistant turn left after truncation", hint="raise max_length")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    torch.manual_seed(config.seed)  # LoRA's A matrices are drawn at adapter creation: seed first
    rng = random.Random(config.seed)
    batches = _batches([len(ids) for ids, _ in features], config.batch_size, rng)
    losses: list[float] = []
    step_seconds: list[float] = []
    step_tokens: list[int] = []
    step_threads: list[int] = []
    target_tokens = 0
    started = time.perf_counter()

    with temporary_adapter(model, lora, under) as (peft_model, name):
        if init_state is not None:
            try:
                result: Any = set_peft_model_state_dict(peft_model, init_state, adapter_name=name)
            except RuntimeError as error:  # tensor shapes differ: another rank or another base
                raise UserError(f"init adapter {init_from} does not fit this base: {error}") from error
            if result.unexpected_keys:
                raise UserError(f"init adapter {init_from} does not fit this base: {result.unexpected_keys[:3]}")
        params = [p for n, p in peft_model.named_parameters() if f".{name}." in n]
        for param in params:
            param.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

        def lr_at(step: int) -> float:  # linear warmup, then cosine decay to 10%
            if step < config.warmup_steps:
                return (step + 1) / config.warmup_steps
            progress_ = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
        device = params[0].device
        causal = peft_model.get_base_model()
        checkpointing = config.gradient_checkpointing and causal.supports_gradient_checkpointing
        if checkpointing:  # non-reentrant: works with a frozen base and trainable adapters, no input grads needed
            set_checkpointing(causal, enabled=True)
        share_cores()  # the threads follow the cores other processes leave free (skills/threads.py)
        try:
            peft_model.train()
            bar = tqdm(range(config.steps), desc="training", unit="step", disable=not progress, leave=False)
            for _ in bar:
                step_started = time.perf_counter()
                batch = make_batch([features[i] for i in next(batches)], pad_id, config).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16_autocast):
                    loss = target_loss(
                        peft_model, batch.input_ids, batch.attention_mask, batch.labels,
                        pad_to_multiple=config.pad_to_multiple, position_ids=batch.position_ids,
                    )  # fmt: skip
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                step_tokens.append(batch.tokens)
                target_tokens += int((batch.labels != IGNORE_INDEX).sum())
                del loss
                return_free_heap()
                step_seconds.append(round(time.perf_counter() - step_started, 4))
                step_threads.append(share_cores())
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if on_step is not None:
                    on_step(len(losses), losses[-1])
        finally:
            peft_model.eval()
            if checkpointing:
                set_checkpointing(causal, enabled=False)
        save_adapter(peft_model, name, out_dir)
        trainable = sum(p.numel() for p in params)

    seconds = time.perf_counter() - started
    tokens = sum(step_tokens)
    digest = data_hash(examples)
    provenance = Provenance(
        source="trained",
        episode_ids=tuple(episode_ids),
        data_hash=digest,
        n_examples=len(examples),
        training=config.model_dump(mode="json")
        | {"init_from": str(init_from) if init_from else None, "under": list(under)},
        library_versions=library_versions(),
    )
    return TrainResult(
        adapter_dir=out_dir,
        losses=losses,
        steps=config.steps,
        examples=len(features),
        tokens=tokens,
        target_tokens=target_tokens,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        step_seconds=step_seconds,
        step_tokens=step_tokens,
        step_threads=step_threads,
        trainable_params=trainable,
        data_hash=digest,
        config=config.model_copy(update={"lora": lora}),
        provenance=provenance,
    )
