"""What a skill is, as data: identity, kind, LoRA shape, revisions with provenance and evaluation.

Everything here is a pydantic model because it is written to disk and read back by other processes (and by other
machines, through export/import): bad input must fail at the edge with the field named.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from skills.errors import InvalidSkillNameError, UserError
from skills.files import ADAPTER_FILES

SCHEMA_VERSION = 1

# A slug: lowercase letters, digits, `-` and `_`, starting and ending with a letter or digit, at most 64 characters.
# No `.`, `/`, `\` or spaces, so a name can never be a path outside its folder, a hidden file or `..`.
_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")


def validate_skill_name(name: str) -> str:
    """Return `name` if it is a safe skill slug, else raise `InvalidSkillNameError` saying why."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidSkillNameError(
            f"invalid skill name {name!r}",
            hint="use 1-64 characters of a-z, 0-9, '-' or '_', starting and ending with a letter or digit",
        )
    return name


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------------------------
# Skill kinds: registered, not discovered.

_SKILL_KINDS: dict[str, str] = {}


def register_skill_kind(name: str, description: str) -> None:
    """Add a skill kind. Kinds name what a skill is for; the router and consolidation may treat them differently.

    Refuses duplicates so that two packs cannot silently redefine one kind.
    """
    validate_skill_name(name)
    if name in _SKILL_KINDS:
        raise UserError(f"skill kind {name!r} is already registered", hint="pick another name")
    _SKILL_KINDS[name] = description


def skill_kinds() -> dict[str, str]:
    """The registered kinds and their descriptions."""
    return dict(_SKILL_KINDS)


for _kind, _description in (
    ("tool_habit", "how and when to call tools, in the exact format"),
    ("style", "how output is written (code style, tone, format)"),
    ("domain", "knowledge or procedures of one domain"),
    ("preference", "one user's preferences"),
    ("memory", "consolidated episodes without a more specific kind"),
):
    register_skill_kind(_kind, _description)


# ---------------------------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(_Model):
    """The shape of a LoRA adapter; mirrors the fields of peft's `LoraConfig` that we set."""

    r: int = Field(8, ge=1, le=1024, description="rank of the update")
    alpha: int = Field(16, ge=1, description="scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA input during training")
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        min_length=1,
        description="names of the linear modules that receive an adapter (all linear layers of a Llama by default)",
    )

    def to_peft(self) -> Any:
        """The equivalent `peft.LoraConfig` (imported lazily: peft pulls in torch)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )

    @classmethod
    def from_adapter_config(cls, config: dict[str, Any]) -> LoraSpec:
        """Read the fields we keep from a PEFT `adapter_config.json` dict."""
        if config.get("peft_type") != "LORA":
            raise ValueError(f"peft_type is {config.get('peft_type')!r}, expected 'LORA'")
        targets = config.get("target_modules")
        if isinstance(targets, str):
            targets = [targets]
        if not targets:
            raise ValueError("target_modules is empty")
        return cls(
            r=int(config["r"]),
            alpha=int(config.get("lora_alpha", config["r"])),
            dropout=float(config.get("lora_dropout", 0.0) or 0.0),
            target_modules=tuple(sorted(targets)),
        )


class Provenance(_Model):
    """Where a revision came from: the data, the training recipe and the software that made it."""

    source: Literal["trained", "imported", "initialized", "external"] = "trained"
    episode_ids: tuple[str, ...] = Field((), description="ids of the episodes the training data came from")
    data_hash: str | None = Field(None, description="sha256 of the canonical training examples")
    n_examples: int = Field(0, ge=0)
    training: dict[str, Any] = Field(default_factory=dict, description="training config (steps, lr, seed, ...)")
    library_versions: dict[str, str] = Field(default_factory=dict)
    note: str = ""


class Evaluation(_Model):
    """Named metrics of a revision (e.g. held-out accuracy) and free-form details."""

    metrics: dict[str, float] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class RoutingVector(_Model):
    """Where a revision sits in an embedder's vector space: the normalized mean of the embeddings of the prompts it
    was trained on. The router compares a task with it (and with the skill's description).

    Stored with the revision because it describes that revision's data, and computed by whoever creates the revision
    (consolidation embeds its episodes' tasks): `skills` never embeds anything itself. Vectors of two embedders are
    not comparable, so the embedder's name travels with the vector and a router using another embedder ignores it.
    """

    embedder: str = Field(min_length=1, description="name of the vector space (the embedder's `name`)")
    embedder_config: dict[str, Any] = Field(default_factory=dict, description="the embedder's `config()`")
    vector: tuple[float, ...] = Field(min_length=2, description="unit-length centroid, rounded to 6 decimals")
    n_prompts: int = Field(ge=1, description="how many prompts the centroid averages (earlier revisions' included)")

    @field_validator("vector")
    @classmethod
    def _check_vector(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not all(math.isfinite(x) for x in value):
            raise ValueError("the routing vector holds a NaN or an infinity")
        norm = math.sqrt(sum(x * x for x in value))
        if abs(norm - 1.0) > 1e-3:
            raise ValueError(f"the routing vector must have unit length, got {norm:.4f}")
        # Six decimals keep cosine similarities exact to ~1e-6 and revision.json ~3x smaller than full floats.
        return tuple(round(x, 6) for x in value)


class RevisionRecord(_Model):
    """One immutable revision of a skill, stored as `revs/<number>/revision.json` beside the adapter files."""

    schema_version: int = SCHEMA_VERSION
    skill: str
    number: int = Field(ge=1)
    parent: int | None = Field(None, ge=1, description="the revision this one continued training from")
    created_at: datetime = Field(default_factory=_now)
    base_fingerprint: str = Field(min_length=1)
    lora: LoraSpec
    provenance: Provenance = Field(default_factory=Provenance)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    size_bytes: int = Field(ge=0, description="bytes of the adapter files")
    trainable_params: int = Field(ge=0, description="number of LoRA parameters")
    files: dict[str, str] = Field(description="file name -> sha256 of its bytes, checked on load")
    routing: RoutingVector | None = Field(None, description="centroid of the training prompts, for the router")

    @field_validator("files")
    @classmethod
    def _check_files(cls, value: dict[str, str]) -> dict[str, str]:
        if set(value) != set(ADAPTER_FILES):
            raise ValueError(f"files must list exactly {', '.join(ADAPTER_FILES)} with their sha256")
        if not all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in value.values()):
            raise ValueError("every file checksum must be a sha256 hex digest")
        return value

    @field_validator("skill")
    @classmethod
    def _check_skill(cls, value: str) -> str:
        return validate_skill_name(value)


RevisionStatus = Literal["promoted", "rejected", "forgotten"]


class HistoryEvent(_Model):
    """A move of the skill's `current` pointer, a revision kept without moving it, or a tombstone.

    A `forget` event is the tombstone of a revision deleted on purpose (`SkillStore.forget_revisions`): which
    revision, when, and why (`note`); never what it was trained on. The revision then counts as gone, not lost."""

    at: datetime = Field(default_factory=_now)
    action: Literal["create", "promote", "reject", "rollback", "forget"]
    revision: int = Field(ge=1)
    note: str = ""


class SkillTombstone(_Model):
    """A whole skill deleted on purpose by forgetting: one line of the store's `forgotten.jsonl`. Names the skill,
    its revisions, when and why; never their content."""

    name: str
    revisions: tuple[int, ...] = ()
    at: datetime = Field(default_factory=_now)
    note: str = ""


class SkillManifest(_Model):
    """A skill's identity and its `current` pointer: `skills/<name>/manifest.json`, replaced atomically."""

    schema_version: int = SCHEMA_VERSION
    name: str
    kind: str
    description: str = Field("", max_length=2000, description="what the skill does; the router reads it")
    tags: tuple[str, ...] = ()
    base_fingerprint: str = Field(min_length=1, description="fingerprint of the base model the skill was trained on")
    lora: LoraSpec
    current: int = Field(ge=1, description="the revision in use")
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    history: tuple[HistoryEvent, ...] = ()

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return validate_skill_name(value)

    @field_validator("kind")
    @classmethod
    def _check_kind(cls, value: str) -> str:
        if value not in _SKILL_KINDS:
            raise ValueError(f"unknown skill kind {value!r}; registered: {', '.join(sorted(_SKILL_KINDS))}")
        return value

    @field_validator("schema_version")
    @classmethod
    def _check_schema(cls, value: int) -> int:
        if value > SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is newer than this habitloop ({SCHEMA_VERSION}); upgrade it")
        return value

    def revision_numbers(self) -> list[int]:
        """Revisions committed to this skill (promoted or rejected) and not forgotten, oldest first."""
        forgotten = set(self.forgotten())
        return sorted({event.revision for event in self.history} - forgotten)

    def forgotten(self) -> list[int]:
        """Revisions deleted on purpose (each has a `forget` tombstone in the history), oldest first."""
        return sorted({event.revision for event in self.history if event.action == "forget"})

    def tombstone(self, revision: int) -> HistoryEvent | None:
        """The `forget` event of a forgotten revision (None for a revision that is not forgotten)."""
        return next((e for e in self.history if e.revision == revision and e.action == "forget"), None)

    def last_number(self) -> int:
        """The highest revision number ever used (forgotten ones included): numbers are never reused."""
        return max((event.revision for event in self.history), default=0)

    def status_of(self, revision: int) -> RevisionStatus:
        """Whether a committed revision was ever promoted (made current), only kept as rejected, or forgotten."""
        actions = {event.action for event in self.history if event.revision == revision}
        if "forget" in actions:
            return "forgotten"
        return "promoted" if actions & {"create", "promote", "rollback"} else "rejected"
