"""The error a tool raises on purpose, for the model to read.

`ToolError` is not a `HabitloopError`: it never leaves `Tool.invoke`, which turns it into the result's error. The
developer's mistakes in defining or registering a tool are `skills.errors.UserError`.
"""

from __future__ import annotations


class ToolError(Exception):
    """Raise inside a tool to tell the model what went wrong: the message becomes the result's `error` as is.

    Any other exception also becomes an error result, but prefixed with its type name; use `ToolError` for
    messages written for the model ("no such file: notes.txt").
    """
