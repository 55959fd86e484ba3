"""BFCL memory's rule for a correct answer, reimplemented from `bfcl_eval/eval_checker/agentic_eval/agentic_checker.py`.

An answer is correct when one of the acceptable strings occurs in it as a whole word (or words), after both are
standardized the same way. The numbers must stay comparable with BFCL's, so this follows their code exactly,
including where it differs from their docstring (see `standardize`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# BFCL's character class: , . / - _ * ^ ( )
_DROPPED = re.compile(r"[\,\.\/\-\_\*\^\(\)]")


def standardize(text: str) -> str:
    """Remove `, . / - _ * ^ ( )`, lower-case, and turn `'` into `"`: BFCL's `standardize_string`.

    BFCL's docstring says whitespace is removed too, but its regex keeps it, and so does this: "April 1, 2024" becomes
    "april 1 2024", and "New York" still matches "new york" but not "newyork".
    """
    return _DROPPED.sub("", text).lower().replace("'", '"')


def is_correct(answer: str, acceptable: Iterable[str]) -> bool:
    """True when some standardized acceptable string occurs in the standardized answer between word boundaries
    (`\\b...\\b`, as BFCL searches). An empty acceptable string matches only where a word boundary is."""
    standardized = standardize(answer)
    return any(re.search(rf"\b{re.escape(standardize(option))}\b", standardized) for option in acceptable)
