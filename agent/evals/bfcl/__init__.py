"""BFCL: data from the bfcl-eval wheel, BFCL's AST checker, the harness over the agent loop, practice, the recipe."""

from agent.evals.bfcl.checker import Verdict, check_call
from agent.evals.bfcl.data import CATEGORIES, BfclCase, load_cases, split_of

__all__ = ["CATEGORIES", "BfclCase", "Verdict", "check_call", "load_cases", "split_of"]
