"""What every backend speaks: the `ChatModel` protocol, one `ChatRequest`, one `Generation`, context fitting.

The agent never calls transformers directly: it asks a `ChatModel` for a reply to a conversation with some skills
active. Backends: the local peft one (`local`), the batcher over it (`batching`), OpenAI HTTP, vLLM; the scripted
fake is `agent.testing.ScriptedChatModel`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field, PrivateAttr

from agent.errors import ContextLengthError

Message = dict[str, Any]


class Generation(BaseModel):
    """One reply and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: list[int] = Field(
        default_factory=list, description="the completion's token ids, where the backend has them"
    )


class ChatRequest(BaseModel):
    """One conversation to answer, with its own skills: the unit of a mixed-skill batch.

    `skills` are (name, revision) pairs; several are composed (summed) on the base. Backends that serve adapters by
    name (vLLM, an OpenAI-compatible server) see them as one model name: see `model_name`.
    """

    messages: list[Message]
    skills: list[tuple[str, int]] = []
    max_new_tokens: int = 256
    temperature: float = 0.0
    # The prompt's length in tokens, as `LocalChatModel.fit` counted it: a request fitted once (the server, then the
    # batcher, then generate_batch) is not rendered and tokenized again. Private: never set by a caller or a client.
    _prompt_tokens: int | None = PrivateAttr(default=None)
    # Where the reply's text goes while it is generated (`streaming`); never serialized, kept by `fitted`.
    _text_sink: Callable[[str], None] | None = PrivateAttr(default=None)

    @property
    def counted_prompt_tokens(self) -> int | None:
        """The prompt's length as a backend's `fit` counted it; None for a request never fitted."""
        return self._prompt_tokens

    @property
    def text_sink(self) -> Callable[[str], None] | None:
        """Where a streaming backend sends the reply's text as it is generated (`agent.backends.streaming`)."""
        return self._text_sink

    def streaming(self, sink: Callable[[str], None]) -> ChatRequest:
        """This request, asking for its reply's text in pieces as they are generated: `sink(piece)` from the
        generating thread (keep it quick). The pieces join up to the final `Generation.text` where the backend
        streams; where it cannot, the sink gets nothing and the final text is all there is."""
        streamed = self.model_copy()
        streamed._text_sink = sink
        return streamed

    def fitted(self, max_new_tokens: int, *, prompt_tokens: int) -> ChatRequest:
        """This request with the completion budget a backend's `fit` allows, remembering the prompt's count."""
        fitted = self.model_copy(update={"max_new_tokens": max_new_tokens})
        fitted._prompt_tokens = prompt_tokens
        return fitted


def fit_context(prompt_tokens: int, max_new_tokens: int, context_length: int | None, *, strict: bool = False) -> int:
    """The completion budget of a prompt of `prompt_tokens`: `max_new_tokens`, cut to what the context leaves.

    Raises `ContextLengthError` when the prompt leaves no room for a single token, or, when `strict` (OpenAI's rule for
    an explicit `max_tokens`), when prompt + `max_new_tokens` exceed the context. Without a known context (None),
    everything fits.
    """
    if context_length is None:
        return max_new_tokens
    left = context_length - prompt_tokens
    if left < 1:
        raise ContextLengthError(
            f"this model's maximum context length is {context_length} tokens, but the messages have {prompt_tokens}",
            hint="shorten the messages (drop old turns or long tool results)",
        )
    if strict and max_new_tokens > left:
        raise ContextLengthError(
            f"this model's maximum context length is {context_length} tokens, but {prompt_tokens + max_new_tokens} "
            f"were asked for ({prompt_tokens} in the messages, {max_new_tokens} in the completion)",
            hint=f"ask for at most {left} completion tokens, or shorten the messages",
        )
    return min(max_new_tokens, left)


def fit_request(model: Any, request: ChatRequest, *, strict: bool = False) -> ChatRequest:
    """`request` as `model` can run it (see `LocalChatModel.fit`); unchanged for models that do not know their
    context (a scripted fake, a remote server that checks for itself)."""
    fit = getattr(model, "fit", None)
    return request if fit is None else fit(request, strict=strict)


@runtime_checkable
class ChatModel(Protocol):
    """What the agent generates with. A model that knows its context window may also offer
    `fit(request, *, strict=False) -> ChatRequest` (see `LocalChatModel.fit`): `fit_request` calls it where it exists,
    so that a conversation too long for the base is refused before it is queued or run."""

    def generate(
        self,
        messages: Sequence[Message],
        *,
        skills: Sequence[tuple[str, int]] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Generation:
        """Reply to `messages` with the given (skill, revision) adapters active on the base."""
        ...

    def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        """Reply to several requests, each with its own skills, in order (batched where the backend can)."""
        ...


def generate_each(model: ChatModel, requests: Sequence[ChatRequest]) -> list[Generation]:
    """The fallback `generate_batch`: one request at a time."""
    return [
        model.generate(r.messages, skills=r.skills, max_new_tokens=r.max_new_tokens, temperature=r.temperature)
        for r in requests
    ]
