"""Memory: the episode (trajectory) model. The short-term buffer and consolidation come with the memory issue."""

from memory.trajectory import Outcome, SkillUse, Step, Trajectory

__all__ = ["Outcome", "SkillUse", "Step", "Trajectory"]
