"""The custom tool that `examples/03_skill_pack.py` ships in a skill pack: one file, as a pack carries tool modules.

A pack's tools are imported only when the pack was installed with `--trust-code`; installing never runs this file.
"""

from __future__ import annotations

from tools import ToolError, tool

STOCK = {"apples": 12, "pears": 4, "plums": 31, "lemons": 7, "figs": 9, "kiwis": 15, "limes": 2, "dates": 40}


@tool
def stock(item: str) -> str:
    """Look up how many pieces of an item are in stock.

    Args:
        item: the item to look up, lowercase plural, e.g. "apples".
    """
    if item not in STOCK:
        raise ToolError(f"unknown item {item!r}; known items: {', '.join(STOCK)}")
    return f"{STOCK[item]} pieces"


TOOLS = [stock]
