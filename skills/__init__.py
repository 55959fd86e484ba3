"""Skills: LoRA adapters as persistent, versioned state on one shared base model.

Importing this package is cheap; torch and peft load only when an adapter is trained or loaded.
"""

from skills.compose import (
    ComponentSpec,
    Composer,
    CompositionSpec,
    composition_methods,
    register_composition_method,
)
from skills.errors import (
    AdapterMisfitError,
    BaseMismatchError,
    CorruptSkillError,
    HabitloopError,
    InstanceAccessError,
    InvalidAdapterError,
    InvalidInstanceNameError,
    InvalidSkillNameError,
    OperatorError,
    SkillExistsError,
    SkillNotFoundError,
    SlotsFullError,
    StoreLockedError,
    UnsafeArchiveError,
    UserError,
)
from skills.manifest import (
    Evaluation,
    HistoryEvent,
    LoraSpec,
    Provenance,
    RevisionRecord,
    SkillManifest,
    SkillTombstone,
    register_skill_kind,
    skill_kinds,
    validate_skill_name,
)
from skills.messages import ChatMessage, Role
from skills.reader import SkillCatalog, SkillReader
from skills.reference import SkillRef
from skills.residency import Residency, ResidencyStats
from skills.store import AdapterWeights, HistoryEntry, SkillProblem, SkillStore, StoreScan
from skills.train import ChatExample, TrainConfig, TrainResult, save_adapter, train_lora

__all__ = [
    "AdapterMisfitError",
    "AdapterSlots",
    "AdapterWeights",
    "BaseMismatchError",
    "ChatExample",
    "ChatMessage",
    "ComponentSpec",
    "Composer",
    "CompositionSpec",
    "CorruptSkillError",
    "Evaluation",
    "HabitloopError",
    "HistoryEntry",
    "HistoryEvent",
    "InstanceAccessError",
    "InvalidAdapterError",
    "InvalidInstanceNameError",
    "InvalidSkillNameError",
    "LoraSpec",
    "OperatorError",
    "Provenance",
    "Residency",
    "ResidencyStats",
    "RevisionRecord",
    "Role",
    "SkillCatalog",
    "SkillExistsError",
    "SkillManifest",
    "SkillTombstone",
    "SlotsFullError",
    "SkillNotFoundError",
    "SkillProblem",
    "SkillReader",
    "SkillRef",
    "SkillStore",
    "StoreLockedError",
    "StoreScan",
    "TrainConfig",
    "TrainResult",
    "UnsafeArchiveError",
    "UserError",
    "composition_methods",
    "register_composition_method",
    "register_skill_kind",
    "save_adapter",
    "skill_kinds",
    "train_lora",
    "validate_skill_name",
]


def __getattr__(name: str) -> object:
    """`AdapterSlots` lazily: the runtime imports torch, which `import skills` alone never does."""
    if name == "AdapterSlots":
        from skills.runtime import AdapterSlots

        return AdapterSlots
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
