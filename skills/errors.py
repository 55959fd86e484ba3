"""The error hierarchy of habitloop, split by who must act.

It lives in `skills` because `skills` is the lowest package: `agent`, `memory` and `tools` all import it, and it
imports none of them. `agent.errors` re-exports everything here.

- `UserError`: the developer's mistake (an unknown skill, a bad name, a skill from another base). Fix the call.
- `OperatorError`: the machine's state is wrong (a corrupt file, a missing base model, a held lock). Fix the files.
- The model's mistakes (a malformed tool call) are never raised: they go back to the model as observations.
"""

from __future__ import annotations


class HabitloopError(Exception):
    """Root of every error habitloop raises on purpose.

    `hint` says what to do next; it is appended to the message so that a traceback alone tells the fix.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class UserError(HabitloopError):
    """The caller asked for something that cannot be done as asked."""


class OperatorError(HabitloopError):
    """Files or the environment are not as they must be; no change to the calling code will fix it."""


class InvalidSkillNameError(UserError, ValueError):
    """A skill name that is not a safe slug (it could escape the store or clash on disk)."""


class InvalidInstanceNameError(UserError, ValueError):
    """An instance name that is not a safe slug (it could escape its folder, or pass for another instance)."""


class InstanceAccessError(UserError):
    """An instance named another instance's skill."""


class SkillNotFoundError(UserError, LookupError):
    """No skill (or no such revision) of that name in the store."""


class SkillExistsError(UserError):
    """A skill of that name is already in the store."""


class BaseMismatchError(UserError):
    """A skill was trained on a different base model than the one loaded."""


class UnsafeArchiveError(UserError):
    """An archive or adapter folder holds something we refuse to read: links, `..` paths, pickle weights."""


class InvalidAdapterError(UserError):
    """An adapter folder is not a LoRA adapter in PEFT's format."""


class AdapterMisfitError(UserError):
    """A valid LoRA adapter that adapter slots cannot hold (DoRA, embeddings, a rank above r_max, a module that is
    not a Linear of the base): serve it with peft (`Residency`) instead."""


class SlotsFullError(UserError):
    """Every adapter slot is pinned: nothing can be evicted to make room."""


class CorruptSkillError(OperatorError):
    """A skill's files on disk are unreadable, truncated or fail their checksum."""


class StoreLockedError(OperatorError):
    """Another process holds the store's write lock for longer than the timeout."""


class BaseModelMissingError(OperatorError):
    """The configured base model cannot be found on this machine."""
