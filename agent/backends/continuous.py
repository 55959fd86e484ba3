"""Continuous batching: requests join a running decode between steps, and leave it when they finish.

A flushed batch (`LocalChatModel.generate_batch`) holds every row until its longest reply ends, and a request that
arrives meanwhile waits for all of it. `ContinuousDecoder` keeps one key/value cache for the rows decoding now,
left-padded to a common length like a batched `generate`'s. The requests that join at one step are prefilled
together (their first token comes from that prefill), and their cache is padded and stacked onto the running one.
A row that ends (end of sequence, or its `max_new_tokens`) is answered at once and its cache rows dropped, and
columns no row needs any more are cut. Each row has its own positions, attention mask, temperature and skills; a
decode step is one forward of all rows, one new token each.

Skills run through the adapter slots (`skills.runtime`): one slot list per row, selected again whenever the rows
change. A request whose skills the slots cannot serve (no slots, or a skill they refuse) is handed back by `join`:
the caller answers it the flushed way. Greedy rows answer what `generate_batch` answers (tested); sampled rows
sample from the temperature-scaled softmax, as `generate` does with top-k and top-p off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from agent.backends.protocol import ChatRequest, Generation
from agent.backends.streaming import TextStream, generation_of, stop_tokens
from skills.threads import share_cores

Answer = Callable[[Generation | BaseException], None]


@dataclass(eq=False)  # rows are compared by identity: two rows may hold equal requests and tokens
class _Row:
    request: ChatRequest
    answer: Answer
    keys: list[tuple[str, int]]  # its skills' slot keys
    prompt_tokens: int
    stream: TextStream
    position: int  # the position of `last` (advanced as each token is chosen)
    last: int = -1  # the token it decodes from next
    ids: list[int] = field(default_factory=list)  # its completion so far


class ContinuousDecoder:
    """A running decode over `local`'s base, at most `max_rows` rows at a time. Not thread-safe: one worker calls
    `join` and `step` (the batcher's).

    `local` is the `LocalChatModel` it decodes for (`LocalChatModel.continuous_decoder` makes one): its prompt
    rendering, fitting, residency and slots are the decoder's, so both answer alike. (Typed `Any`: local.py imports
    this module.)
    """

    def __init__(self, local: Any, max_rows: int = 8) -> None:
        self.local = local
        self.max_rows = max_rows
        eos = getattr(local.base.model.generation_config, "eos_token_id", None)
        configured = eos if isinstance(eos, list) else [eos]
        self.stops = stop_tokens(local.base.tokenizer) | {t for t in configured if t is not None}
        self.rows: list[_Row] = []
        self._cache: Any = None  # DynamicCache over self.rows, (rows, heads, width, dim) per layer
        self._mask: Any = None  # (rows, width): 1 where a row has a real token
        self._pinned: list[tuple[str, int]] = []
        self._gathered: dict[str, Any] = {}  # the running rows' gathered slot weights (`AdapterSlots.using`)
        self._gathered_for: list[list[tuple[str, int]]] | None = None

    @property
    def active(self) -> int:
        return len(self.rows)

    @property
    def free(self) -> int:
        """Rows that can join now."""
        return self.max_rows - len(self.rows)

    def join(self, joiners: Sequence[tuple[ChatRequest, Answer]]) -> list[tuple[ChatRequest, Answer]]:
        """Prefill `joiners` together (one left-padded batch) and add them to the running rows; at most `free` of
        them. Each `answer` gets its `Generation` when its reply ends, or the exception that ended it (an unknown
        skill, a conversation the chat template refuses: at once, the others unaffected). Returns, untouched, the
        joiners whose skills the adapter slots cannot serve, for the caller to answer the flushed way."""
        import torch
        from transformers import DynamicCache

        if len(joiners) > self.free:
            raise ValueError(f"{len(joiners)} rows cannot join: {self.free} are free")
        rows, prompts, pins, refused = [], [], [], []
        for request, answer in joiners:
            try:
                request = self.local.fit(request)
                prompt = self.local._render(request.messages)
                slotted = self.local._slotted([list(request.skills)]) if request.skills else ([[]], [])
            except BaseException as error:  # noqa: B036 - its own failure, for its own caller
                answer(error)
                continue
            if slotted is None:
                refused.append((request, answer))
                continue
            stream = TextStream(self.local.base.tokenizer, request.text_sink, request.max_new_tokens, self.stops)
            rows.append(_Row(request, answer, slotted[0][0], 0, stream, position=0))
            prompts.append(prompt)
            pins += slotted[1]
        if not rows:
            return refused
        share_cores()  # threads for the cores other processes leave free: at joins, as before every flushed batch
        batch = self.local._encode(prompts, padding=True, padding_side="left")
        mask = batch["attention_mask"]
        for row, length in zip(rows, mask.sum(dim=1).tolist(), strict=True):
            row.prompt_tokens, row.position = int(length), int(length) - 1  # `last` will sit at position `length`
        try:
            with self._selected([row.keys for row in rows]) as model, torch.inference_mode():
                out = model(
                    input_ids=batch["input_ids"], attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    cache=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1,
                )  # fmt: skip
        except BaseException as error:  # noqa: B036 - the joiners' callers must hear of it; the running rows go on
            self._unpin(pins)
            for row in rows:
                row.answer(error)
            return refused
        self._pinned += pins
        self._stack(rows, out.cache, mask)
        self._advance(rows, out.logits[:, -1])
        return refused

    def step(self) -> None:
        """One token for every running row; rows that end are answered and leave. A failure fails every running row
        (each `answer` gets it) and leaves the decoder empty."""
        import torch

        if not self.rows:
            return
        try:
            last = torch.tensor([[row.last] for row in self.rows])
            positions = torch.tensor([[row.position] for row in self.rows])
            self._mask = torch.cat([self._mask, torch.ones((len(self.rows), 1), dtype=self._mask.dtype)], dim=1)
            with self._selected([row.keys for row in self.rows], running=True) as model, torch.inference_mode():
                out = model(
                    input_ids=last, attention_mask=self._mask, position_ids=positions, cache=self._cache,
                    use_cache=True, logits_to_keep=1,
                )  # fmt: skip
            self._cache = out.cache
            self._advance(list(self.rows), out.logits[:, -1])
        except BaseException as error:  # noqa: B036 - every running row's caller must hear of it
            rows, self.rows, self._cache, self._mask = self.rows, [], None, None
            self._unpin(self._pinned)
            self._pinned = []
            for row in rows:
                row.answer(error)
            raise

    # ------------------------------------------------------------------------------------------------ internals

    @contextmanager
    def _selected(self, rows: list[list[tuple[str, int]]], *, running: bool = False) -> Iterator[Any]:
        """The base with each row's slots selected, for one forward. For the running rows (`running`), the gathered
        weights are kept from step to step until the rows change (their keys stay pinned while they decode)."""
        slots = self.local.residency.slots
        gathered = None
        if running:
            if rows != self._gathered_for:
                self._gathered, self._gathered_for = {}, rows
            gathered = self._gathered
        with self.local.residency.base_only() as model:
            if slots is None or not any(rows):
                yield model
            else:
                with slots.using(rows, gathered):
                    yield model

    def _advance(self, rows: list[_Row], logits: Any) -> None:
        """Choose each row's next token from its logits (rows x vocab); answer and drop the rows that ended."""
        import torch

        for row, scores in zip(rows, logits, strict=True):
            temperature = row.request.temperature
            if temperature > 0:
                token = int(torch.multinomial(torch.softmax(scores.float() / temperature, dim=-1), 1))
            else:
                token = int(scores.argmax())
            row.ids.append(token)
            row.stream.take(token)
            row.last, row.position = token, row.position + 1
        ended = [row for row in rows if row.ids[-1] in self.stops or len(row.ids) >= row.request.max_new_tokens]
        if ended:
            self._drop(ended)
            for row in ended:
                row.answer(generation_of(self.local.base.tokenizer, row.ids, row.prompt_tokens))

    def _stack(self, rows: list[_Row], cache: Any, mask: Any) -> None:
        """Add `rows` (their prefilled cache and mask) to the running rows, left-padding whichever is shorter."""
        import torch
        import torch.nn.functional as F
        from transformers import DynamicCache

        if not self.rows:
            self.rows, self._cache, self._mask = list(rows), cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def pad(t: Any, to: int) -> Any:  # left-pad the time axis: dim 2 of (rows, heads, width, dim), 1 of a mask
            return F.pad(t, (0, 0, to - t.shape[2], 0)) if t.dim() == 4 else F.pad(t, (to - t.shape[1], 0))

        layers = [
            (
                torch.cat([pad(a.keys, width), pad(b.keys, width)]),
                torch.cat([pad(a.values, width), pad(b.values, width)]),
            )
            for a, b in zip(self._cache.layers, cache.layers, strict=True)
        ]
        self._cache = DynamicCache(layers, config=self.local.base.model.config)
        self._mask = torch.cat([pad(self._mask, width), pad(mask, width)])
        self.rows += rows

    def _drop(self, ended: list[_Row]) -> None:
        """Take `ended` out of the rows and the cache; cut the left columns no remaining row attends to."""
        import torch
        from transformers import DynamicCache

        keep = [i for i, row in enumerate(self.rows) if row not in ended]
        for row in ended:
            for key in row.keys:
                self._pinned.remove(key)
                self._unpin([key])
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = None
            return
        index = torch.tensor(keep)
        mask = self._mask.index_select(0, index)
        start = int((mask.sum(dim=0) > 0).nonzero()[0])  # the first column some row still needs
        self._mask = mask[:, start:]
        layers = [
            (layer.keys.index_select(0, index)[:, :, start:], layer.values.index_select(0, index)[:, :, start:])
            for layer in self._cache.layers
        ]
        self._cache = DynamicCache(layers, config=self.local.base.model.config)

    def _unpin(self, keys: list[tuple[str, int]]) -> None:
        slots = self.local.residency.slots
        for key in keys:
            slots.unpin(key)
