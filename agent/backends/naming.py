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

from collections.abc import Sequence

from skills.errors import UserError
from skills.reference import SkillRef, check_distinct, format_refs

BASE_MODEL = "base"

ModelSkill = tuple[str, int | None]
"""(qualified skill name, revision or None for the current one): the pair the server and the backends pass."""


def parse_model_name(model: str) -> list[ModelSkill]:
    """The skills a model name asks for, in order; `[]` for the base. Raises `UserError` for a malformed name."""
    return [ref.pair() for ref in parse_model_refs(model)]


def parse_model_refs(model: str) -> list[SkillRef]:
    """The typed references of a model name (`skills.reference` parses each component); `[]` for the base."""
    if not isinstance(model, str) or not model.strip():
        raise UserError("the model name is empty", hint=f"use {BASE_MODEL!r}, a skill name, or skills joined by '+'")
    parts = model.strip().split("+")
    if parts[0] == BASE_MODEL:
        parts = parts[1:]
    refs: list[SkillRef] = []
    for part in parts:
        try:
            if part == BASE_MODEL:
                raise UserError(f"{BASE_MODEL!r} is the base, not a skill")
            refs.append(SkillRef.parse_one(part))
        except UserError as error:
            raise UserError(
                f"{model!r} is not a model name: component {part!r} is not a skill name",
                hint="skill names are slugs (a-z 0-9 - _), optionally owner/skill and @revision, joined by '+'",
            ) from error
    check_distinct(refs, model)
    return refs


def format_model_name(skills: Sequence[tuple[str, int | None]], *, pin: bool = True) -> str:
    """The model name for these skills (`base` for none); with `pin`, each carries its revision (`name@rev`)."""
    if not skills:
        return BASE_MODEL
    name = format_refs((SkillRef.of(skill, revision) for skill, revision in skills), pin=pin)
    parse_model_name(name)  # refuse here what a server would refuse later
    return name
