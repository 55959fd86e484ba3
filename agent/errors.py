"""habitloop's errors, re-exported from `skills.errors` (the lowest package) so users import them from one place."""

from skills.errors import (
    BaseMismatchError,
    BaseModelMissingError,
    CorruptSkillError,
    HabitloopError,
    InvalidAdapterError,
    InvalidSkillNameError,
    OperatorError,
    SkillExistsError,
    SkillNotFoundError,
    StoreLockedError,
    UnsafeArchiveError,
    UserError,
)

__all__ = [
    "BaseMismatchError",
    "BaseModelMissingError",
    "CorruptSkillError",
    "HabitloopError",
    "InvalidAdapterError",
    "InvalidSkillNameError",
    "OperatorError",
    "SkillExistsError",
    "SkillNotFoundError",
    "StoreLockedError",
    "UnsafeArchiveError",
    "UserError",
]
