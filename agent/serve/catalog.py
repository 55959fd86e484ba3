"""The model catalog: which `model` names this server answers to, and what `/v1/models` lists.

A name is resolved against the skill store at request time (`agent.backends.naming` spells it): a skill created
while the server runs is served at once, an unpinned name follows promotions and rollbacks, a deleted one is a 404.
Compositions (`a+b`) exist once asked for; the catalog remembers the first `max_compositions` of them for listing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from agent.backends.naming import BASE_MODEL, ModelSkill, format_model_name, parse_model_name
from skills.errors import InvalidSkillNameError, SkillNotFoundError, UserError
from skills.store import SkillStore

_NOT_SERVED_HINT = "GET /v1/models lists what this server serves"


class ModelCatalog:
    """Resolves model names against the store and remembers the compositions requested, for `/v1/models`."""

    def __init__(self, store: SkillStore, *, max_compositions: int = 256) -> None:
        self.store = store
        self.max_compositions = max_compositions
        self.compositions: OrderedDict[str, float] = OrderedDict()  # name -> first request time

    def resolve(self, model: str) -> list[tuple[str, int]]:
        """(skill, revision) for each component, current revision where none is pinned.

        Raises `SkillNotFoundError` for an unknown skill or revision, `UserError` for a malformed name.
        """
        try:
            refs: list[ModelSkill] = parse_model_name(model)
        except UserError as error:  # not even a name: as unknown as any other (OpenAI answers 404 too)
            raise SkillNotFoundError(f"the model {model!r} does not exist: {error.message}", hint=error.hint) from error
        resolved: list[tuple[str, int]] = []
        for name, revision in refs:
            try:
                record = self.store.revision(name, revision)
            except InvalidSkillNameError as error:  # owner/skill: personal instances are not in this store
                raise SkillNotFoundError(
                    f"the model {model!r} does not exist: {name!r} is not a skill of this server's store",
                    hint=_NOT_SERVED_HINT,
                ) from error
            except SkillNotFoundError as error:
                raise SkillNotFoundError(
                    f"the model {model!r} does not exist: {error.message}", hint=_NOT_SERVED_HINT
                ) from error
            resolved.append((name, record.number))
        if len(refs) > 1:
            key = format_model_name(refs, pin=True)
            if key not in self.compositions and len(self.compositions) < self.max_compositions:
                self.compositions[key] = time.time()
        return resolved

    def listing(self) -> list[dict[str, Any]]:
        """OpenAI model objects: the base, every skill of the store (current revision), the compositions asked."""
        entries: list[dict[str, Any]] = [
            {"id": BASE_MODEL, "object": "model", "created": 0, "owned_by": "habitloop", "skills": []}
        ]
        for manifest in sorted(self.store.list(), key=lambda m: m.name):
            entries.append(
                {
                    "id": manifest.name,
                    "object": "model",
                    "created": int(manifest.created_at.timestamp()),
                    "owned_by": "habitloop",
                    "kind": manifest.kind,
                    "description": manifest.description,
                    "revision": manifest.current,
                    "skills": [manifest.name],
                }
            )
        for name, created in self.compositions.items():
            entries.append(
                {
                    "id": name,
                    "object": "model",
                    "created": int(created),
                    "owned_by": "habitloop",
                    "skills": [skill for skill, _ in parse_model_name(name)],
                }
            )
        return entries

    def card(self, model: str) -> dict[str, Any]:
        """The model object of `GET /v1/models/{model}`: its listing entry, or a bare one for a name that resolves
        without being listed (a pinned `skill@3`). Raises as `resolve` does."""
        self.resolve(model)
        listed = {entry["id"]: entry for entry in self.listing()}
        return listed.get(model) or {
            "id": model,
            "object": "model",
            "created": 0,
            "owned_by": "habitloop",
            "skills": parse_model_name(model),
        }
