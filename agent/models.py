"""Chat models the agent generates with: one small protocol, the local transformers/peft one, and a scripted fake.

The agent never calls transformers directly: it asks a `ChatModel` for a reply to a conversation with some skills
active. The serving issue adds an OpenAI-compatible HTTP implementation behind the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from skills.errors import UserError

Message = dict[str, Any]


class Generation(BaseModel):
    """One reply and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatRequest(BaseModel):
    """One conversation to answer, with its own skills: the unit of a mixed-skill batch.

    `skills` are (name, revision) pairs; several are composed (summed) on the base. Backends that serve adapters by
    name (vLLM, an OpenAI-compatible server) see them as one model name: see `model_name`.
    """

    messages: list[Message]
    skills: list[tuple[str, int]] = []
    max_new_tokens: int = 256
    temperature: float = 0.0


@runtime_checkable
class ChatModel(Protocol):
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


class LocalChatModel:
    """The shared base in this process, with skills loaded through `Residency` (peft adapters)."""

    def __init__(self, base: Any, residency: Any) -> None:
        self.base = base
        self.residency = residency

    def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        return generate_each(self, requests)

    def generate(
        self,
        messages: Sequence[Message],
        *,
        skills: Sequence[tuple[str, int]] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Generation:
        import torch

        if len(skills) > 1:
            raise UserError(
                f"{len(skills)} skills requested at once; composing several skills is not built yet",
                hint="pass one skill (composition comes with the routing/composition issue)",
            )
        tokenizer = self.base.tokenizer
        prompt = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": None, "top_k": None}
            if temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        if skills:
            self.residency.activate(*skills[0])
            context: Any = nullcontext(self.residency.model)
        else:
            context = self.residency.base_only()
        with context as model, torch.inference_mode():
            output = model.generate(
                **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
        new = output[0, inputs["input_ids"].shape[1] :]
        return Generation(
            text=tokenizer.decode(new, skip_special_tokens=True).strip(),
            prompt_tokens=int(inputs["input_ids"].shape[1]),
            completion_tokens=int(new.shape[0]),
        )
