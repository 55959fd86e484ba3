"""Fakes that ship with the library, so users can test their agents and skills without the real base.

- `tiny_base()`: a randomly initialised two-layer Llama with a byte-level tokenizer and a ChatML chat template,
  built in-process in well under a second. It has the same module names as SmolLM2 (q_proj, v_proj, ...), so real
  LoRA adapters train, save, load and compose on it exactly as on the real base; it just talks nonsense.
- `ScriptedChatModel`: returns pre-written replies in order, and records what it was asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.backends.protocol import ChatRequest, Generation, Message, generate_each
from agent.base import Base, fingerprint_model
from skills.errors import UserError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer (256 byte tokens, no merges) plus ChatML's special tokens: any text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for char in sorted(alphabet):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_base(seed: int = 0, *, hidden_size: int = 64, layers: int = 2) -> Base:
    """A tiny random Llama with `tiny_tokenizer()`, wrapped as a `Base` like the real one."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,  # SmolLM2's context: a conversation that fits the real base fits this one
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)  # float32 by default
    model.eval()
    model.requires_grad_(False)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return Base(
        name=f"tiny-llama-{seed}",
        source="agent.testing.tiny_base",
        model=model,
        tokenizer=tokenizer,
        fingerprint=fingerprint_model(model),
        cache_path=None,
        load_seconds=0.0,
        parameters=sum(p.numel() for p in model.parameters()),
    )


@dataclass
class ScriptedChatModel:
    """A `ChatModel` that answers from a script, for testing agent logic without any weights.

    `replies` is either a list of strings, used in order, or a function of the conversation returning the reply.
    Every conversation it was asked is kept in `calls` (and the skills active for it in `skills_seen`). Running out
    of replies is an error, so a test notices when the code under test asks more often than expected. Token counts
    are whitespace-separated words: there is no tokenizer.
    """

    replies: Sequence[str] | Callable[[list[Message]], str]
    calls: list[list[Message]] = field(default_factory=list)
    skills_seen: list[list[tuple[str, int]]] = field(default_factory=list)

    def generate(
        self,
        messages: Sequence[Message],
        *,
        skills: Sequence[tuple[str, int]] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Generation:
        conversation = [dict(message) for message in messages]
        self.calls.append(conversation)
        self.skills_seen.append(list(skills))
        if callable(self.replies):
            text = self.replies(conversation)
        elif len(self.calls) > len(self.replies):
            raise UserError(
                f"ScriptedChatModel ran out of replies after {len(self.replies)} calls",
                hint="give it more replies, or a function of the conversation",
            )
        else:
            text = self.replies[len(self.calls) - 1]
        prompt = sum(len(str(m.get("content", "")).split()) for m in conversation)
        return Generation(text=text, prompt_tokens=prompt, completion_tokens=len(text.split()))

    def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        return generate_each(self, requests)


def random_adapter(
    base: Base,
    folder: Path,
    *,
    seed: int = 0,
    r: int = 8,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    std: float = 0.01,
) -> Path:
    """A LoRA adapter with random non-zero weights, saved in PEFT format: for benchmarks and for tests that need
    adapters which visibly change the output (peft starts B at zero; a large `std` makes the change large)."""
    import torch

    from skills.manifest import LoraSpec
    from skills.train import save_adapter, temporary_adapter

    spec = LoraSpec(r=r, alpha=2 * r, target_modules=tuple(target_modules))
    torch.manual_seed(seed)
    with temporary_adapter(base.model, spec) as (model, name):
        for param_name, param in model.named_parameters():
            if f".{name}." in param_name and "lora_B" in param_name:
                torch.nn.init.normal_(param, std=std)
        save_adapter(model, name, folder)
    return folder
