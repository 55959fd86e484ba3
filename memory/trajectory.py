"""The trajectory (episode) of one agent run: what was asked, every message, every tool call, who judged the outcome.

It lives in `memory` because memory owns episodes (the buffer stores them, consolidation trains on them); the agent
records into it. It is plain data: pydantic, JSON round-trip, nothing imported from `agent`; its messages are
`skills.ChatMessage`s, stored as their plain dicts.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from skills.messages import ChatMessage

OutcomeStatus = Literal["success", "failure", "unknown"]
Judge = Literal["checker", "tool", "user", "max_steps", "error", "none"]
StepKind = Literal["model", "tool_call", "tool_result", "parse_error", "final"]


def new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class Outcome(BaseModel):
    """How a run ended and who said so."""

    model_config = ConfigDict(extra="forbid")

    status: OutcomeStatus = "unknown"
    score: float | None = Field(None, description="optional graded score in [0, 1]")
    judged_by: Judge = "none"
    reason: str = ""


class SkillUse(BaseModel):
    """A skill active during the run, at the revision used, and why it was chosen."""

    model_config = ConfigDict(extra="forbid")

    name: str
    revision: int
    reason: str = "requested"
    score: float | None = None
    threshold: float | None = None


class Step(BaseModel):
    """One event of a run, in order: a model reply, a tool call, its result, or a call the parser refused."""

    model_config = ConfigDict(extra="forbid")

    index: int
    kind: StepKind
    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    ok: bool | None = None
    seconds: float = 0.0
    at: datetime = Field(default_factory=_now)


class Trajectory(BaseModel):
    """One episode: the unit the buffer stores and consolidation learns from."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    thread_id: str
    task: str
    instance: str | None = None
    messages: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the thread's chat messages up to the end of this run, system prompt excluded: each a "
        "`ChatMessage.model_dump()` ({role, content}), kept as plain dicts so every trajectory ever written loads "
        "unchanged (`chat_messages` is the typed view)",
    )
    context_messages: int = Field(0, ge=0, description="how many of `messages` came from earlier runs on the thread")
    system_prompt: str | None = Field(None, description="the system prompt the model saw (tool schemas)")
    examples: list[str] = Field(default_factory=list, description="ids of episodes shown as worked examples")
    steps: list[Step] = Field(default_factory=list)
    skills: list[SkillUse] = Field(default_factory=list)
    answer: str | None = None
    outcome: Outcome = Field(default_factory=Outcome)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None
    consolidated_into: str | None = Field(None, description="'skill@revision' once consolidated into weights")

    @classmethod
    def demonstration(
        cls,
        task: str,
        replies: list[dict[str, Any]] | str,
        *,
        system_prompt: str | None = None,
        thread_id: str | None = None,
    ) -> Trajectory:
        """A user's worked example: the task and how it should be answered.

        `replies` is the final answer as text, or the messages after the task (assistant tool calls, tool results,
        the answer), e.g. `[{"role": "assistant", "content": "<tool_call>...</tool_call>"}, {"role": "tool", ...},
        {"role": "assistant", "content": "391"}]`.
        """
        after = [ChatMessage.assistant(replies).model_dump()] if isinstance(replies, str) else list(replies)
        answer = next((str(m["content"]) for m in reversed(after) if m.get("role") == "assistant"), None)
        return cls(
            thread_id=thread_id or new_id(),
            task=task,
            messages=[ChatMessage.user(task).model_dump(), *after],
            system_prompt=system_prompt,
            answer=answer,
            outcome=Outcome(status="success", judged_by="user", reason="demonstration"),
            finished_at=_now(),
        )

    @property
    def run_messages(self) -> list[dict[str, Any]]:
        """This run's messages: the task and everything after it."""
        return self.messages[self.context_messages :]

    def chat_messages(self, *, run_only: bool = False) -> list[ChatMessage]:
        """The messages (only this run's with `run_only`) as typed chat messages, content as text: the view a
        training set is built from."""
        return [ChatMessage.from_record(m) for m in (self.run_messages if run_only else self.messages)]

    @property
    def seconds(self) -> float:
        end = self.finished_at or _now()
        return (end - self.started_at).total_seconds()
