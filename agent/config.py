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
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's own choice")
    max_hot: int = Field(8, ge=1, description="adapters kept loaded in the model at once")
    max_warm: int = Field(64, ge=0, description="adapters kept in RAM (evicted from the model, not yet dropped)")

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
    def reports_dir(self) -> Path:
        return self.home / "reports"
