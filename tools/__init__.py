"""Typed tools the agent acts through (the `@tool` decorator, registry, call parsing): built by the agent-loop issue.

Nothing here yet; this package exists so that the distribution's four top-level packages are installed together.
"""

__all__: list[str] = []
