"""Process-wide settings, read from `HABITLOOP_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where habitloop keeps its state and which base it loads. Every field can be set as `HABITLOOP_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="HABITLOOP_", extra="ignore")

    home: Path = Field(Path("~/.habitloop"), description="root of all persistent state (models, skills, buffer)")
    base: str = Field(
        "smollm2",
        description="the base model: 'smollm2' (the packaged default), a .gguf file, or a local HF model folder",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads, fixed; default: as many as the cores other processes leave free, re-measured "
        "between training steps and generations (skills/threads.py)",
    )
    max_hot: int = Field(8, ge=1, description="adapters kept loaded in the model at once")
    max_warm: int = Field(64, ge=0, description="adapters kept in RAM (evicted from the model, not yet dropped)")
    slots: int = Field(
        16,
        ge=0,
        description="adapter slots (skills.runtime): how many skills stay resident for mixed batches, compositions and "
        "single conversations (rank <= slot_rank; others run as peft adapters); 0: off, every skill runs on peft",
    )
    slot_rank: int = Field(64, ge=1, description="the largest LoRA rank an adapter slot holds (larger: peft)")
    chroma_url: str | None = Field(
        None, description="a chroma server (http://host:port) for the buffer; default: embedded under home/buffer"
    )
    buffer_max_unconsolidated: int | None = Field(
        2000, ge=1, description="unconsolidated episodes kept; beyond it the oldest failures go first"
    )
    buffer_max_age_days: float | None = Field(
        30.0, gt=0, description="older failures and consolidated episodes are dropped (what awaits consolidation stays)"
    )
    retrieval_k: int = Field(2, ge=0, description="similar successful episodes shown as worked examples (0: none)")
    route: bool = Field(
        False, description="route tasks run without named skills to the most similar skills (`habitloop run` does)"
    )
    route_top_k: int = Field(2, ge=0, description="skills the router chooses at most, besides pinned ones")
    route_threshold: float = Field(0.3, ge=-1.0, le=1.0, description="lowest similarity a routed skill may have")
    route_pinned: list[str] = Field(default_factory=list, description="skills every routed run uses (JSON list)")
    auto_consolidate_after: int | None = Field(
        None, ge=1, description="consolidate a skill after a run once it has this many new successes (off by default)"
    )

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def skills_dir(self) -> Path:
        return self.home / "skills"

    @property
    def buffer_dir(self) -> Path:
        return self.home / "buffer"

    @property
    def instances_dir(self) -> Path:
        """Personal instances: `instances/<name>/` is one user's own skill store (same layout as skills/)."""
        return self.home / "instances"

    @property
    def packs_dir(self) -> Path:
        """Installed skill packs, one folder each (`habitloop packs install`)."""
        return self.home / "packs"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"
