"""Short-term episode buffer and consolidation into skills: built by the memory issue.

Nothing here yet; this package exists so that the distribution's four top-level packages are installed together.
"""

__all__: list[str] = []
