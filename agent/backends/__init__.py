"""Generation backends: every way habitloop gets a reply from the base with some skills active.

The protocol is `agent.backends.protocol.ChatModel` (`generate` one conversation, `generate_batch` several, each
request a `ChatRequest` with its own skills, each reply a `Generation`; `fit_request` cuts a request to a model's
context). Every backend is a `ChatModel`:

- `local.LocalChatModel`: the shared base in this process (transformers), skills as peft adapters through a
  `skills.Residency`, mixed-skill batches in one forward pass. Built, with its base, store and residency, by
  `agent.runtime.local_runtime`.
- `batching.BatchingChatModel`: wraps any `ChatModel` so many threads can call it; queues concurrent requests into
  the inner model's `generate_batch` (what `habitloop serve` runs on).
- `openai_http.OpenAIChatModel`: any OpenAI-compatible server (`habitloop serve`, vLLM's, LoRAX's).
- `vllm_backend.VLLMChatModel`: vLLM in this process, the store's adapters through its multi-LoRA (optional extra).
- `agent.testing.ScriptedChatModel`: the scripted fake for tests (not a backend; it lives with the other fakes).

`naming` spells a set of skills as one OpenAI `model` name (`base`, `tool-habits`, `a+b@3`), for the HTTP backends
and the server. Backends import lazily: `import agent.backends` pulls in neither httpx nor vllm nor torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from agent.backends.naming import BASE_MODEL, format_model_name, parse_model_name

if TYPE_CHECKING:
    from agent.backends.batching import BatchingChatModel
    from agent.backends.local import LocalChatModel
    from agent.backends.openai_http import OpenAIChatModel
    from agent.backends.protocol import ChatModel, ChatRequest, Generation
    from agent.backends.vllm_backend import VLLMChatModel

__all__ = [
    "BASE_MODEL",
    "BatchingChatModel",
    "ChatModel",
    "ChatRequest",
    "Generation",
    "LocalChatModel",
    "OpenAIChatModel",
    "VLLMChatModel",
    "format_model_name",
    "parse_model_name",
]

_LAZY = {
    "BatchingChatModel": "agent.backends.batching",
    "ChatModel": "agent.backends.protocol",
    "ChatRequest": "agent.backends.protocol",
    "Generation": "agent.backends.protocol",
    "LocalChatModel": "agent.backends.local",
    "OpenAIChatModel": "agent.backends.openai_http",
    "VLLMChatModel": "agent.backends.vllm_backend",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agent.backends' has no attribute {name!r}")
