"""`habitloop serve`: the OpenAI-compatible HTTP server over any `ChatModel`.

- `app`: the Starlette app (`create_app`), its config (`ServeConfig`), uvicorn entry points (`serve_local`,
  `local_app`, `running_server`).
- `wire`: the OpenAI request, reply and error models.
- `catalog`: which `model` names exist (`ModelCatalog`, `/v1/models`).

Names import lazily: `import agent.serve` pulls in neither starlette nor the base model.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.serve.app import ServeConfig, completion_text, create_app, local_app, running_server, serve_local

__all__ = ["ServeConfig", "completion_text", "create_app", "local_app", "running_server", "serve_local"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from agent.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'agent.serve' has no attribute {name!r}")
