"""Playing BFCL memory's conversations to a user's agent, so that what the user said is in that user's buffer.

Each conversation is one thread (thread id = conversation id) of `Agent(instance=scenario)`, each turn one
`agent.run`: the turns are recorded exactly as any conversation with that user would be, which is what the user's
memory is consolidated from and retrieved from. Nothing about the questions is played.

Playing is idempotent: a turn already in the user's buffer on its thread is not played again, so a rerun after a
crash continues where the first one stopped (the thread's checkpoint keeps the earlier turns in context).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from agent.evals.memory.data import Conversation
from skills.errors import UserError
from tools import ToolRegistry


class PlayReport(BaseModel):
    """What one play did: turns run now and turns found already recorded, and how long it took."""

    instance: str
    conversations: int
    turns_played: int
    turns_skipped: int
    seconds: float


def recorded_turns(agent: Any) -> Counter[tuple[str, str]]:
    """(thread id, task) of every episode of the agent's instance: what a play would not run again."""
    return Counter((t.thread_id, t.task) for t in agent.buffer.list(instance=agent.instance))


def play_conversations(
    agent: Any,
    conversations: Sequence[Conversation],
    *,
    max_new_tokens: int = 16,
    progress: bool = True,
    on_turn: Callable[[bool], None] | None = None,
) -> PlayReport:
    """Run every turn not yet recorded, conversation by conversation, in order, on the agent's own instance.

    The replies are cut at `max_new_tokens` for the play (the agent's own setting is restored afterwards): what
    is measured later is what the user said, and a short reply keeps 323 turns affordable on a CPU. `progress`: a
    bar on stderr; `on_turn(played)` is called after each turn (the CLI draws its own bar with it).
    """
    if agent.instance is None:
        raise UserError("memory conversations are played to one user's agent", hint="use Agent(instance=SCENARIO)")
    from tqdm.auto import tqdm

    done = recorded_turns(agent)
    total = sum(len(c.turns) for c in conversations)
    played = skipped = 0
    started = time.perf_counter()
    saved_budget, agent.max_new_tokens = agent.max_new_tokens, max_new_tokens
    try:
        with tqdm(total=total, desc=f"play {agent.instance}", unit="turn", disable=not progress) as bar:
            for conversation in conversations:
                for turn in conversation.turns:
                    key = (conversation.id, turn)
                    told = done[key] <= 0
                    if told:
                        agent.run(turn, thread_id=conversation.id, examples=0, tools=ToolRegistry(), max_steps=1)
                        played += 1
                    else:
                        done[key] -= 1
                        skipped += 1
                    bar.update(1)
                    if on_turn is not None:
                        on_turn(told)
    finally:
        agent.max_new_tokens = saved_budget
    return PlayReport(
        instance=agent.instance,
        conversations=len(conversations),
        turns_played=played,
        turns_skipped=skipped,
        seconds=time.perf_counter() - started,
    )
