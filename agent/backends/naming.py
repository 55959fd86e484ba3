"""One OpenAI `model` name for a set of skills: the convention of multi-LoRA servers (vLLM, LoRAX), extended.

Grammar (what `habitloop serve` accepts and `OpenAIChatModel` sends):

    model      := "base" | component ("+" component)*      a leading "base+" is allowed and means nothing
    component  := [owner "/"] skill ["@" revision]
    skill, owner: skill-name slugs (a-z 0-9 - _);  revision: a positive integer

- `base`: the shared base with no adapter.
- `tool-habits`: that skill at its current revision (what a vLLM/LoRAX server calls an adapter name).
- `tool-habits@3`: revision 3, pinned: the agent pins what it recorded in the trajectory, so a promotion on the
  server between two calls cannot change the weights behind one run.
- `tool-habits+alice/preference`: the composition (sum) of both skills. `owner/skill` names a personal instance's
  skill; whether it resolves is the server's store's business.

The order of components is kept (it is the caller's), duplicates are refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from skills.errors import UserError

BASE_MODEL = "base"
_COMPONENT = re.compile(
    r"^(?P<skill>(?:[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?/)?[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?)"
    r"(?:@(?P<revision>[1-9][0-9]{0,8}))?$"
)

SkillRef = tuple[str, int | None]
"""(skill name, revision or None for the current one)."""


def parse_model_name(model: str) -> list[SkillRef]:
    """The skills a model name asks for, in order; `[]` for the base. Raises `UserError` for a malformed name."""
    if not isinstance(model, str) or not model.strip():
        raise UserError("the model name is empty", hint=f"use {BASE_MODEL!r}, a skill name, or skills joined by '+'")
    parts = model.strip().split("+")
    if parts[0] == BASE_MODEL:
        parts = parts[1:]
    refs: list[SkillRef] = []
    for part in parts:
        match = _COMPONENT.fullmatch(part)
        if match is None or part == BASE_MODEL:
            raise UserError(
                f"{model!r} is not a model name: component {part!r} is not a skill name",
                hint="skill names are slugs (a-z 0-9 - _), optionally owner/skill and @revision, joined by '+'",
            )
        revision = match.group("revision")
        refs.append((match.group("skill"), int(revision) if revision else None))
    names = [name for name, _ in refs]
    if len(set(names)) != len(names):
        raise UserError(f"{model!r} names a skill twice", hint="name each skill once")
    return refs


def format_model_name(skills: Sequence[tuple[str, int | None]], *, pin: bool = True) -> str:
    """The model name for these skills (`base` for none); with `pin`, each carries its revision (`name@rev`)."""
    if not skills:
        return BASE_MODEL
    name = "+".join(f"{skill}@{revision}" if pin and revision is not None else skill for skill, revision in skills)
    parse_model_name(name)  # refuse here what a server would refuse later
    return name
