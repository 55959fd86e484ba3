"""The trajectory (episode) of one agent run: what was asked, every message, every tool call, who judged the outcome.

It lives in `memory` because memory owns episodes (the buffer stores them, consolidation trains on them); the agent
records into it. It is plain data: pydantic, JSON round-trip, nothing imported from `agent`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    messages: list[dict[str, Any]] = Field(default_factory=list, description="chat messages, system prompt excluded")
    steps: list[Step] = Field(default_factory=list)
    skills: list[SkillUse] = Field(default_factory=list)
    answer: str | None = None
    outcome: Outcome = Field(default_factory=Outcome)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None
    consolidated_into: str | None = Field(None, description="'skill@revision' once consolidated into weights")

    @property
    def seconds(self) -> float:
        end = self.finished_at or _now()
        return (end - self.started_at).total_seconds()
