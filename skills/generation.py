"""Batched greedy (or sampled) chat generation on the shared model, with whatever adapter is active.

It lives in `skills` because consolidation (in `memory`) generates too, to answer replay prompts and to evaluate
candidates, and `memory` may not import `agent`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skills.heap import return_free_heap
from skills.threads import share_cores

Message = dict[str, str]


def generate(
    model: Any,
    tokenizer: Any,
    chats: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
) -> list[str]:
    """Reply to each chat; returns the decoded new text (special tokens removed), in order."""
    import torch

    replies: list[str] = []
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge: pad on the left
    try:
        for start in range(0, len(chats), batch_size):
            prompts = [
                tokenizer.apply_chat_template(list(chat), tokenize=False, add_generation_prompt=True)
                for chat in chats[start : start + batch_size]
            ]
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            share_cores()  # threads for the cores other processes leave free (skills/threads.py)
            with torch.inference_mode():
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    temperature=temperature if do_sample else None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]  # (batch, new)
            replies.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
            del output, new_tokens
            return_free_heap()  # the batch's KV cache, freed: its pages back to the system
    finally:
        tokenizer.padding_side = previous_side
    return [reply.strip() for reply in replies]
