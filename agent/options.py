"""The options of one agent run, in one typed model: `Agent.run` and `Agent.stream` build it from their keyword
arguments (their public signatures), `run_batch` from each item's dict, and the run itself reads only this."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.graph import Checker
from skills.reference import SkillRef
from tools import ToolRegistry


class RunOptions(BaseModel):
    """The options of one run, as `Agent.run` and `Agent.stream` take them (and each `run_batch` item): validated
    once, then passed down whole."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    skills: tuple[str | SkillRef, ...] = Field(
        (), description="skills to run with (`name`, `name@3`, `alice/name`); empty: none, or the router's choice"
    )
    checker: Checker | None = Field(None, description="judges the outcome from the task, the answer, the trajectory")
    thread_id: str | None = Field(None, description="continue this thread; default: a new one, named by the run id")
    max_steps: int | None = Field(None, description="model turns at most; default (also for 0): the agent's")
    temperature: float = Field(0.0, description="0 decodes greedily")
    examples: int | None = Field(None, description="worked examples shown (0: none); default: the agent's retrieval_k")
    route: bool | None = Field(None, description="let the router choose when `skills` is empty; default: auto_route")
    tools: ToolRegistry | None = Field(None, description="this run's tools instead of the agent's")

    @classmethod
    def of(cls, options: dict[str, Any]) -> RunOptions:
        """The options from `run`'s keyword arguments as a dict (a `run_batch` item); unknown keys are a `TypeError`
        as they are for `run`."""
        unknown = sorted(set(options) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"unexpected run options: {', '.join(unknown)}")
        return cls(**{**options, "skills": tuple(options.get("skills", ()))})
