"""habitloop's errors in one place: the root and the store's (`skills.errors`), memory's, the agent's own.

Every package keeps its errors in its own `errors` module under the one root (`HabitloopError`, with a hint);
this module re-exports them all, so users import any of them from here.
"""

from memory.errors import EpisodeNotFoundError
from skills.errors import (
    AdapterMisfitError,
    BaseMismatchError,
    BaseModelMissingError,
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


class ContextLengthError(UserError):
    """A conversation, with the completion asked for, does not fit the base's context window.

    The server answers it with OpenAI's 400 `context_length_exceeded`.
    """


__all__ = [
    "AdapterMisfitError",
    "BaseMismatchError",
    "BaseModelMissingError",
    "ContextLengthError",
    "CorruptSkillError",
    "EpisodeNotFoundError",
    "HabitloopError",
    "InstanceAccessError",
    "InvalidAdapterError",
    "InvalidInstanceNameError",
    "InvalidSkillNameError",
    "OperatorError",
    "SkillExistsError",
    "SkillNotFoundError",
    "SlotsFullError",
    "StoreLockedError",
    "UnsafeArchiveError",
    "UserError",
]
