"""The in-process backend: the shared base with skills as peft adapters (`LocalChatModel`).

One skill runs as its own adapter, several as their exact sum (the `Composer`), and a batch of requests with different
skills runs in one forward pass per token (peft's mixed-batch `adapter_names`). When the residency has adapter slots
(`skills.runtime`), batches and unmerged single conversations run through them instead (one slot list per row, one
gathered shrink + expand per layer), and peft serves only what the slots refuse.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from pydantic import BaseModel

from agent.backends.protocol import ChatRequest, Generation, Message, fit_context, generate_each
from agent.backends.streaming import RowStreamer, generation_of
from skills.errors import UserError
from skills.threads import share_cores

Key = tuple[str, int]  # (skill, revision): a skill's key in the adapter slots


class LocalModelStats(BaseModel):
    """Counters, for tests and benchmarks (read them; do not write them)."""

    tokenizations: int = 0  # tokenizer calls: rendering a prompt and counting it is the cost `fit` saves once done


class LocalChatModel:
    """The shared base in this process, with skills loaded through `Residency` (peft adapters).

    One skill runs as its own adapter; several run as their exact sum, built once by the `Composer` (LoRA ranks
    concatenated into one adapter) and cached. `generate_batch` answers requests of different skills in one forward
    pass per token with peft's mixed-batch inference (`adapter_names`: each row of the batch goes through its own
    adapter, `__base__` through none).
    """

    def __init__(
        self, base: Any, residency: Any, *, composer: Any = None, max_batch: int = 16, merge_for_decode: bool = True
    ) -> None:
        from skills.compose import Composer

        self.base = base
        self.residency = residency
        self.composer = composer or Composer(residency)
        self.max_batch = max_batch
        # One conversation at a time decodes faster with the skills folded into the weights (`Residency.merged`),
        # from the second consecutive call with the same skills on; mixed batches always run peft's per-row LoRA path.
        self.merge_for_decode = merge_for_decode
        self._merged_for: tuple[tuple[tuple[str, int], ...], str] | None = None  # (skills, adapter) merged last
        self._previous: tuple[tuple[str, int], ...] | None = None  # the skills of the last single conversation
        # The longest prompt + completion the base can attend over (SmolLM2: 8192); None: unknown, never checked.
        config = getattr(base.model, "config", None)
        self.context_length: int | None = getattr(config, "max_position_embeddings", None)
        self._tokenizing = threading.Lock()
        self.stats = LocalModelStats()

    def generate(
        self,
        messages: Sequence[Message],
        *,
        skills: Sequence[tuple[str, int]] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Generation:
        """Reply to `messages`; the reply is cut where the context ends, a prompt beyond it is refused.

        Raises `ContextLengthError` (before anything runs) when the conversation fills the base's context.
        """
        import torch

        tokenizer = self.base.tokenizer
        inputs = self._encode([self._render(messages)])
        max_new_tokens = fit_context(int(inputs["input_ids"].shape[1]), max_new_tokens, self.context_length)
        share_cores()  # threads for the cores other processes leave free (skills/threads.py)
        with self.activated(skills) as model, torch.inference_mode():
            output = model.generate(
                **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **_sampling(temperature)
            )
        width = int(inputs["input_ids"].shape[1])
        return generation_of(tokenizer, output[0, width:].tolist(), width)

    def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        """Answer every request, batching those with the same temperature whatever their skills.

        Every request is fitted to the context first (`fit`): one that cannot fit fails the call before any runs.
        """
        requests = [self.fit(request) for request in requests]
        results: list[Generation | None] = [None] * len(requests)
        groups: dict[float, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.temperature, []).append(index)
        for temperature, indices in groups.items():
            for chunk in self.batches_that_fit(indices, requests):
                replies = self._generate_mixed([requests[i] for i in chunk], temperature)
                for index, reply in zip(chunk, replies, strict=True):
                    results[index] = reply
        return [r for r in results if r is not None]

    def continuous_decoder(self, max_rows: int) -> Any:
        """A `ContinuousDecoder` over this model (`BatchingChatModel(..., continuous=True)` runs one)."""
        from agent.backends.continuous import ContinuousDecoder

        return ContinuousDecoder(self, max_rows)

    def fit(self, request: ChatRequest, *, strict: bool = False) -> ChatRequest:
        """`request` with `max_new_tokens` cut to what the base's context leaves after its prompt.

        The prompt is counted as generation renders it (the base's chat template, this tokenizer). Raises
        `ContextLengthError` when the prompt leaves no room, or when `strict` and prompt + `max_new_tokens` do not
        fit (what the server does for an explicit `max_tokens`, as OpenAI does). `BatchingChatModel` calls it when a
        request is queued, so one that cannot run is refused at once and never fails a batch.
        """
        prompt_tokens = request.counted_prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = int(self._encode([self._render(request.messages)])["input_ids"].shape[1])
        budget = fit_context(prompt_tokens, request.max_new_tokens, self.context_length, strict=strict)
        return request.fitted(budget, prompt_tokens=prompt_tokens)

    def adapter_for(self, skills: Sequence[tuple[str, int]]) -> str:
        """The adapter a skill set runs as, loaded (or built) in the shared model: `__base__` for none."""
        if not skills:
            return BASE_ADAPTER
        if len(skills) == 1:
            return str(self.residency.load(*skills[0]))
        return str(self.composer.build(self._spec(skills)))

    @contextmanager
    def activated(self, skills: Sequence[tuple[str, int]]) -> Iterator[Any]:
        """The shared model with `skills` active, as `generate` runs them: the base alone, folded into the weights
        (an agent's next turn with the same skills, when `merge_for_decode`), one adapter, or their composition."""
        if not skills:
            with self.residency.base_only() as model:
                yield model
        elif self.merge_for_decode and self._repeated(skills):
            key, last = self._key(skills), self._merged_for
            if last is not None and last[0] == key and self.residency.merged_adapter == last[1]:
                name = last[1]  # still folded in since the last turn: nothing to load or merge
            else:
                name = self.adapter_for(skills)
            self._merged_for = (key, name)
            with self.residency.merged(name) as model:
                yield model
        elif (slotted := self._slotted([list(skills)])) is not None:
            with self.residency.base_only() as model, self._using(*slotted):
                yield model
        elif len(skills) == 1:
            self.residency.activate(*skills[0])
            yield self.residency.model
        else:
            self.composer.activate(self._spec(skills))
            yield self.residency.model

    def batches_that_fit(self, indices: list[int], requests: Sequence[ChatRequest]) -> Iterator[list[int]]:
        """`indices` (of `requests`) split into batches that fit: at most `max_batch` rows, and no more distinct single
        skills than stay hot together (nor compositions than the composer caches), so loading one adapter never evicts
        a batch-mate. `generate_batch` runs each batch as one mixed-adapter generation. With adapter slots the bounds
        are the slots' capacity and no composition cache (a composition is a sum of slots per row): a batch that
        falls back to peft beyond its bounds is still answered, one request at a time."""
        slots = self.residency.slots
        max_skills = self.residency.max_hot if slots is None else slots.capacity
        max_composed = self.composer.max_cached if slots is None else self.max_batch
        chunk: list[int] = []
        hot: set[tuple[str, int]] = set()  # every single skill the chunk loads (a composition's parts too)
        composed: set[tuple[tuple[str, int], ...]] = set()
        for index in indices:
            skills = [(str(name), int(revision)) for name, revision in requests[index].skills]
            combo = {tuple(sorted(skills))} if len(skills) > 1 else set()
            fits = (
                len(chunk) < self.max_batch
                and len(hot | set(skills)) <= max_skills
                and len(composed | combo) <= max_composed
            )
            if chunk and not fits:
                yield chunk
                chunk, hot, composed = [], set(), set()
            chunk.append(index)
            hot |= set(skills)
            composed |= combo
        if chunk:
            yield chunk

    # ------------------------------------------------------------------------------------------------ internals

    def _render(self, messages: Sequence[Message]) -> str:
        """The prompt text of a conversation: the base's own chat template, ending with the assistant's turn."""
        from jinja2.exceptions import TemplateError

        try:
            return str(
                self.base.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            )
        except TemplateError as error:  # the template's own `raise_exception` (e.g. roles that must alternate)
            raise UserError(
                f"the base's chat template refuses these messages: {error}",
                hint="change the messages' roles or order to what the base's chat template accepts",
            ) from error

    def _encode(self, prompts: list[str], **options: Any) -> Any:
        """Token ids (pt tensors) of `prompts`, under a lock: a fast tokenizer reconfigures itself for padding, and
        `fit` runs in the callers' threads while the batching worker tokenizes batches."""
        with self._tokenizing:
            self.stats.tokenizations += 1
            return self.base.tokenizer(prompts, return_tensors="pt", add_special_tokens=False, **options)

    def _spec(self, skills: Sequence[tuple[str, int]]) -> Any:
        from skills.compose import CompositionSpec

        return CompositionSpec.of(*[(name, revision) for name, revision in skills])

    @staticmethod
    def _key(skills: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
        return tuple(sorted((str(n), int(r)) for n, r in skills))

    def _repeated(self, skills: Sequence[tuple[str, int]]) -> bool:
        """Merge on the second consecutive call with the same skills: an agent's next turn, not a one-off request
        (a service switching users on every request would pay the merge and gain nothing)."""
        key, previous = self._key(skills), self._previous
        self._previous = key
        return key == previous

    def _slotted(self, rows: Sequence[Sequence[tuple[str, int]]]) -> tuple[list[list[Key]], list[Key]] | None:
        """(each row's skills as keys resident in the residency's adapter slots, the keys pinned for `_using` to
        release); None, with nothing pinned, when there are no slots or a skill does not fit them (peft serves it)."""
        from skills.errors import AdapterMisfitError, SlotsFullError

        slots = self.residency.slots
        if slots is None:
            return None
        keys: list[list[Key]] = []
        pinned: list[Key] = []
        try:
            for row in rows:
                keys.append([])
                for name, revision in row:
                    key = self.residency.slot(str(name), int(revision))
                    slots.pin(key)  # so loading a batch-mate never evicts it
                    pinned.append(key)
                    keys[-1].append(key)
        except BaseException as error:  # nothing stays pinned: a misfit falls back to peft, anything else is raised
            for key in pinned:
                slots.unpin(key)
            if isinstance(error, AdapterMisfitError | SlotsFullError):
                return None
            raise
        return keys, pinned

    @contextmanager
    def _using(self, keys: list[list[Key]], pinned: list[Key]) -> Iterator[None]:
        """Select `keys` (from `_slotted`) row by row for the block; the pins `_slotted` took are released after it."""
        slots = self.residency.slots
        assert slots is not None  # `_slotted` returned keys: there are slots
        try:
            with slots.using(keys):
                yield
        finally:
            for key in pinned:
                slots.unpin(key)

    def _generate_mixed(self, requests: list[ChatRequest], temperature: float) -> list[Generation]:
        slotted = self._slotted([list(r.skills) for r in requests])
        if slotted is not None:
            with self.residency.base_only() as model, self._using(*slotted):
                return self._generate_rows(model, requests, temperature, {})
        names = [self.adapter_for(r.skills) for r in requests]
        model = self.residency.model
        loaded = set(getattr(model, "peft_config", {}))
        lost = [name for name in names if name != BASE_ADAPTER and name not in loaded]
        if lost:  # a later load evicted an earlier one after all: fall back to one at a time, still correct
            return generate_each(self, requests)
        extra: dict[str, Any] = {}
        if any(name != BASE_ADAPTER for name in names):
            extra["adapter_names"] = names
            if not model.active_adapters or getattr(model, "_disable_adapters", False):
                self.residency.activate_adapter(next(name for name in names if name != BASE_ADAPTER))
            context: Any = nullcontext(model)
        else:
            context = self.residency.base_only()
        with context as active:
            return self._generate_rows(active, requests, temperature, extra)

    def _generate_rows(
        self, model: Any, requests: list[ChatRequest], temperature: float, extra: dict[str, Any]
    ) -> list[Generation]:
        """One left-padded batch of `requests` through `model` as it is set up (adapters, slots), decoded per row."""
        import torch

        tokenizer = self.base.tokenizer
        # decoder-only: every row continues from the right edge
        batch = self._encode([self._render(r.messages) for r in requests], padding=True, padding_side="left")
        longest = max(r.max_new_tokens for r in requests)
        sinks = [r.text_sink for r in requests]
        if any(sinks):
            extra = extra | {"streamer": RowStreamer(tokenizer, sinks, [r.max_new_tokens for r in requests])}
        share_cores()
        with torch.inference_mode():
            output = model.generate(
                **batch,
                max_new_tokens=longest,
                pad_token_id=tokenizer.pad_token_id,
                **_sampling(temperature),
                **extra,
            )
        width = batch["input_ids"].shape[1]
        return [
            generation_of(
                tokenizer, output[row, width : width + request.max_new_tokens].tolist(),
                int(batch["attention_mask"][row].sum()),
            )
            for row, request in enumerate(requests)
        ]  # fmt: skip


BASE_ADAPTER = "__base__"
"""peft's name for "no adapter" in a mixed batch."""


def _sampling(temperature: float) -> dict[str, Any]:
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "top_p": None, "top_k": None}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
