"""What a tool may depend on during one run: a `ToolContext` passed in by the caller of `invoke`, never a global
(pydantic-ai's `RunContext`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ToolContext:
    """What a tool may depend on during one run, passed in by the caller of `invoke` (never a global).

    A tool asks for it with a parameter annotated `ToolContext` (by convention named `ctx`); that parameter is
    filled in by `invoke` and does not appear in the schema the model sees.
    """

    workspace: Path | None = None
    """The folder the workspace file tools are confined to; `None` means file tools refuse to run."""
    run_id: str | None = None
    """An identifier of the current agent run, for tools that log or cache per run."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Anything else a custom tool needs (a database handle, a client, ...), by name."""

    def __post_init__(self) -> None:
        if self.workspace is not None and not isinstance(self.workspace, Path):
            object.__setattr__(self, "workspace", Path(self.workspace))
