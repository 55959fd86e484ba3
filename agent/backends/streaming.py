"""Token streaming: each row of a generating batch hands its new text to its request's sink as it is decoded; and
where a local reply ends (`stop_tokens`, `generation_of`), which the stream and the final `Generation` share.

`ChatRequest.streaming(sink)` asks for the reply's text in pieces while it is generated (the server's SSE). The
local backend passes a `RowStreamer` to transformers' `generate`, which calls `put` with every step's new token of
each row (one tensor of shape (rows,)). What a sink receives joins up to exactly the `Generation.text` the request
gets at the end: the stream starts at the first non-space character and holds back trailing whitespace and
incomplete UTF-8 (a character split across tokens decodes to U+FFFD until its last byte arrives), as the final text is
stripped. A backend that cannot stream (a remote server, the one-at-a-time fallback) sends nothing to the sink: the
caller then has only the final text, which is why a server sends what the sink did not (`unstreamed`).
A sink runs in the generating thread between decode steps: it must be quick (a queue's put), and if it raises,
its row stops streaming while the batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from agent.backends.protocol import Generation

log = logging.getLogger(__name__)

TextSink = Callable[[str], None]


class TextStream:
    """One request's stream: its completion's token ids so far, and how much of their text its sink has had.

    `take` each new token; the stream ends at the first `stops` token or after `budget` tokens (what is not the
    reply is not streamed).
    """

    def __init__(self, tokenizer: Any, sink: TextSink | None, budget: int, stops: set[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.sink = sink
        self.budget = budget
        self.stops = stops if stops is not None else stop_tokens(tokenizer)
        self.ids: list[int] = []
        self.sent = 0  # characters of the (left-stripped) text handed to the sink
        self.done = sink is None

    def take(self, token: int) -> None:
        if self.done:
            return
        if token in self.stops or len(self.ids) >= self.budget:
            self.done = True
            return
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        ready = text.rstrip()
        if ready.endswith("\ufffd"):  # a character whose bytes are still arriving
            return
        if len(ready) > self.sent:
            delta, self.sent = ready[self.sent :], len(ready)
            try:
                self.sink(delta)  # type: ignore[misc]
            except Exception:  # a consumer's failure ends its own stream, never the batch
                log.exception("a stream's sink failed; that row stops streaming")
                self.done = True


def stop_tokens(tokenizer: Any) -> set[int]:
    """The tokens that end a reply: end of sequence, and padding (what a finished row of a batch decodes)."""
    return {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}


def generation_of(tokenizer: Any, new: Sequence[int], prompt_tokens: int) -> Generation:
    """A local backend's `Generation` from the completion's token ids: the text without special tokens, stripped;
    the tokens up to and including the first end of sequence (else padding; the rest is a finished row's filler)."""
    ids = [int(t) for t in new]
    length = len(ids)
    for stop in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if stop is not None and stop in ids:
            length = ids.index(stop) + 1
            break
    text = str(tokenizer.decode(ids, skip_special_tokens=True)).strip()
    return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=length, tokens=ids[:length])


class RowStreamer:
    """A transformers streamer (`put` / `end`) that splits each step's tokens by row, one `TextStream` each.

    `sinks[i]` receives row i's text (None: row i does not stream); `budgets[i]` is its `max_new_tokens` (a batch
    decodes up to its longest budget; a row's tokens beyond its own are not its reply).
    """

    def __init__(self, tokenizer: Any, sinks: Sequence[TextSink | None], budgets: Sequence[int]) -> None:
        stops = stop_tokens(tokenizer)
        self.rows = [TextStream(tokenizer, sink, budget, stops) for sink, budget in zip(sinks, budgets, strict=True)]
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate's first call hands over the prompt
            self._prompt_seen = True
            return
        steps = value.reshape(len(self.rows), -1).tolist()  # (rows,) per step; (rows, k) if several at once
        for row, tokens in zip(self.rows, steps, strict=True):
            for token in tokens:
                row.take(int(token))

    def end(self) -> None:
        """Nothing is flushed: the held-back tail is whitespace or a broken character, which the final text drops."""


def unstreamed(final: str, streamed: str) -> str:
    """What a stream still owes its reader once the whole reply is known: the rest of `final` after `streamed`.

    `streamed` is a prefix of `final` whenever the backend streamed this request (see the module docstring). If it is
    not (a backend whose pieces did not add up), what was sent cannot be taken back: the reader gets `final` past the
    length already sent, and a warning is logged.
    """
    if not final.startswith(streamed):
        log.warning("a streamed reply diverged from its final text (%r, then %r)", streamed[:80], final[:80])
    return final[len(streamed) :]
