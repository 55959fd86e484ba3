"""One chat message: the shape a prompt is built from, a trajectory records and a training set is made of.

It lives in `skills`, the lowest package, because training (skills.train) takes it; `memory` (trajectories) and
`agent` (prompts, the loop) build theirs with it. On the wire and on disk a message is the plain dict
`{"role": ..., "content": ...}` that chat templates and OpenAI-style servers take: `model_dump()` is exactly that
dict, so a trajectory written from these is byte for byte the one written from dicts before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = get_args(Role)


class ChatMessage(BaseModel):
    """One turn of a conversation. `tool` turns carry a tool's result (or a refused call) back to the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, content: str) -> ChatMessage:
        return cls(role="assistant", content=content)

    @classmethod
    def tool(cls, content: str) -> ChatMessage:
        return cls(role="tool", content=content)

    @classmethod
    def from_record(cls, message: Mapping[str, Any]) -> ChatMessage:
        """The message a recorded dict holds (a trajectory's, a user's demonstration): content as text, whatever
        else the dict carries left out. A role outside `ROLES` is refused (`ValidationError`)."""
        return cls(role=message.get("role"), content=str(message.get("content", "")))


def as_records(messages: Iterable[ChatMessage]) -> list[dict[str, Any]]:
    """The plain dicts of `messages`, as a trajectory, a chat template and a backend take them."""
    return [message.model_dump() for message in messages]
