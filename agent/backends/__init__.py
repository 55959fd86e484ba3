"""Generation backends behind the `ChatModel` protocol, and the model naming they share.

- `naming`: how a set of skills is spelled as one OpenAI `model` name (`base`, `tool-habits`, `a+b@3`).
- `openai_http.OpenAIChatModel`: any OpenAI-compatible server (`habitloop serve`, vLLM's, LoRAX's).
- `vllm_backend.VLLMChatModel`: vLLM in this process, the store's adapters through its multi-LoRA (optional extra).

The in-process transformers/peft backend is `agent.backends.local.LocalChatModel`. Backends import lazily: `import
agent.backends` pulls in neither httpx nor vllm.
"""

from typing import TYPE_CHECKING, Any

from agent.backends.naming import BASE_MODEL, format_model_name, parse_model_name

if TYPE_CHECKING:
    from agent.backends.openai_http import OpenAIChatModel
    from agent.backends.vllm_backend import VLLMChatModel

__all__ = ["BASE_MODEL", "OpenAIChatModel", "VLLMChatModel", "format_model_name", "parse_model_name"]


def __getattr__(name: str) -> Any:
    if name == "OpenAIChatModel":
        from agent.backends.openai_http import OpenAIChatModel

        return OpenAIChatModel
    if name == "VLLMChatModel":
        from agent.backends.vllm_backend import VLLMChatModel

        return VLLMChatModel
    raise AttributeError(f"module 'agent.backends' has no attribute {name!r}")
