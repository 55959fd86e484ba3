"""A custom typed tool: its signature and docstring become the JSON schema the model sees, and bad arguments come
back to the model as observations instead of crashing the run.

    python examples/02_custom_tool.py
"""

from __future__ import annotations

from typing import Literal

from agent import Agent
from tools import ToolError, tool

STOCK = {"apples": 12, "pears": 0, "plums": 31}


@tool
def inventory(item: str, unit: Literal["pieces", "dozens"] = "pieces") -> str:
    """Look up how many of an item are in stock.

    Args:
        item: the item to look up, e.g. "apples".
        unit: count in single pieces or in dozens.
    """
    if item not in STOCK:
        raise ToolError(f"unknown item {item!r}; known items: {', '.join(STOCK)}")
    count = STOCK[item]
    return f"{count / 12:g} dozens" if unit == "dozens" else f"{count} pieces"


# The tool on its own: validated, typed, never raising out of invoke.
print(inventory.openai_schema())
print(inventory.invoke({"item": "apples", "unit": "dozens"}).output)
print(inventory.invoke({"item": "apples", "unit": "boxes"}).error)
print(inventory.invoke({"item": "kiwis"}).error)

# The tool in the agent, on the real base.
agent = Agent(tools=[inventory], max_steps=3)
result = agent.run("How many apples are in stock? Use the inventory tool.")
for step in result.steps:
    print(f"{step.kind:>12}: {step.tool or ''} {step.arguments or ''} {step.text}")
print(f"answer: {result.answer!r}; outcome: {result.outcome.status}")
