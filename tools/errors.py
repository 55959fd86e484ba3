"""The errors a tool raises on purpose. The developer's mistakes are `skills.errors.UserError` (the one error root)."""

from __future__ import annotations


class ToolError(Exception):
    """Raise inside a tool to tell the model what went wrong: the message becomes the result's `error` as is.

    Any other exception also becomes an error result, but prefixed with its type name; use `ToolError` for
    messages written for the model ("no such file: notes.txt").
    """
