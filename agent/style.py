"""Learning a repository's coding style as a skill: "make my agent write code the way my repository does".

    read the repository (memory.repository) -> find its ruff rules (memory.style) -> record its documented, in-style
    functions as demonstrations (the buffer) -> consolidate them into a `style` skill (memory.recipe.style_recipe:
    replay, a gate that judges held-out replies by the rules, provenance with the repository's origin)

The demonstrations are the functions the repository itself writes in its style: a function that breaks the rules
found (one of the few that made a rule not quite unanimous) is not taught. They are chosen by a hash of their file
and name, not by their order, so a cap on their number samples the whole repository. `self_contained=True` teaches
only the functions that run outside their repository, their standard imports first (`SourceFunction.
self_contained`); they are fewer (66 of habitloop's 596), so they are trained on for 4 passes instead of 2.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, Field

from memory.recipe import style_recipe
from memory.report import ConsolidationReport
from memory.repository import SourceFunction, StyleSource, read_repository
from memory.style import StyleRules, check_code, discover_rules
from skills.errors import UserError
from skills.manifest import validate_skill_name


class StyleReport(BaseModel):
    """What `learn_style` did: where from, the rules found, the functions read and taught, the consolidation."""

    name: str
    source: StyleSource = Field(exclude=True)
    path: str
    commit: str | None
    package: str | None
    version: str | None
    files: int
    rules: StyleRules
    functions: int = Field(description="module-level functions read")
    in_style: int = Field(description="of those, how many break none of the rules found")
    demonstrations: int = Field(
        description="recorded as demonstrations (documented, in style, short enough; self-contained if asked)"
    )
    self_contained: bool = Field(False, description="only functions that run outside the repository were taught")
    consolidation: ConsolidationReport | None = Field(None, description="None: recorded only (`consolidate=False`)")

    @property
    def promoted(self) -> bool:
        return self.consolidation is not None and self.consolidation.promoted


def teachable(
    functions: list[SourceFunction], rules: StyleRules, *, max_lines: int, self_contained: bool = False
) -> tuple[list[SourceFunction], int]:
    """The functions worth demonstrating (a docstring to ask from, in style, at most `max_lines` lines, and when
    asked self-contained), in hash order; and how many of all of them are in style."""
    checks = check_code([f.code for f in functions], rules)
    in_style = [f for f, c in zip(functions, checks, strict=True) if c.in_style]
    chosen = [
        f
        for f in in_style
        if f.description and f.code.count("\n") < max_lines and (f.self_contained or not self_contained)
    ]
    chosen.sort(key=lambda f: hashlib.sha256(f"{f.file}:{f.name}".encode()).hexdigest())
    return chosen, len(in_style)


def learn_style(
    agent: Any,
    source: str,
    name: str,
    *,
    max_functions: int = 256,
    max_lines: int = 30,
    max_violation_share: float = 0.1,
    self_contained: bool = False,
    consolidate: bool = True,
    **recipe: Any,
) -> StyleReport:
    """Learn the style of the repository at `source` (a folder or an installed package) into the skill `name` of
    `agent`'s store: at most `max_functions` demonstrations of at most `max_lines` lines; a rule is part of the style
    when at most `max_violation_share` of the repository's functions break it. `consolidate=False` records the
    demonstrations only (they are retrieved as worked examples until a later consolidation). `recipe`: overrides of
    `memory.recipe.style_recipe` (e.g. `max_steps`). `self_contained`: teach only the functions that run outside the
    repository, with their standard imports (4 passes unless `recipe` says `epochs`)."""
    validate_skill_name(name)
    if max_functions < 4:
        raise UserError(f"max_functions must be at least 4, got {max_functions}", hint="a style needs examples")
    origin, functions = read_repository(source)
    rules = discover_rules([f.code for f in functions], max_violation_share=max_violation_share)
    chosen, in_style = teachable(functions, rules, max_lines=max_lines, self_contained=self_contained)
    chosen = chosen[:max_functions]
    if len(chosen) < 4:
        raise UserError(
            f"{origin.path} has {len(chosen)} documented{', self-contained' if self_contained else ''} in-style "
            f"functions of at most {max_lines} lines",
            hint="a style skill needs at least 4; pass a bigger repository or raise --max-lines",
        )
    episodes = [agent.learn_from(function.demonstration(standalone=self_contained)) for function in chosen]
    report = None
    if consolidate:
        if self_contained:
            recipe.setdefault("epochs", 4.0)
        recipe_ = style_recipe(rules, origin, **recipe)
        (report,) = agent.consolidate(name, recipe=recipe_, episodes=episodes)
    return StyleReport(
        name=name,
        source=origin,
        path=origin.path,
        commit=origin.commit,
        package=origin.package,
        version=origin.version,
        files=len(origin.files),
        rules=rules,
        functions=len(functions),
        in_style=in_style,
        demonstrations=len(chosen),
        self_contained=self_contained,
        consolidation=report,
    )
