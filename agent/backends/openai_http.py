"""`OpenAIChatModel`: the `ChatModel` protocol over any OpenAI-compatible `/v1/chat/completions` server.

Each request names its skills as the `model` (see `agent.backends.naming`: `base`, `tool-habits@2`,
`a@1+b@4`), which is how `habitloop serve`, vLLM's and LoRAX's multi-LoRA servers pick the adapter. A batch is sent
as concurrent requests (the server batches them again on its side); results come back in order.

Errors keep their meaning across the wire: 404 (unknown model or skill) is `SkillNotFoundError`, other 4xx are
`UserError`, 5xx, timeouts and refused connections are `OperatorError`, each with the server's own message.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import httpx

from agent.backends.naming import format_model_name
from agent.backends.protocol import ChatRequest, Generation, Message
from skills.errors import OperatorError, SkillNotFoundError, UserError


class OpenAIChatModel:
    """A client of an OpenAI-compatible server, as a `ChatModel` (thread-safe: one pooled `httpx.Client`).

    `base_url` includes the API prefix, as in the `openai` package: `http://127.0.0.1:8000/v1`. `pin_revisions`
    sends `skill@revision` (the default: the revision the agent asked for is the one that answers); turn it off for
    servers that know adapters by plain name only (vLLM's `--lora-modules name=path`).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        *,
        pin_revisions: bool = True,
        max_concurrency: int = 16,
    ) -> None:
        if max_concurrency < 1:
            raise UserError(f"max_concurrency must be at least 1, not {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.pin_revisions = pin_revisions
        self.max_concurrency = max_concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )

    def __repr__(self) -> str:
        return f"OpenAIChatModel({self.base_url!r})"

    # ------------------------------------------------------------------------------------------------ ChatModel

    def generate(
        self,
        messages: Sequence[Message],
        *,
        skills: Sequence[tuple[str, int]] = (),
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Generation:
        payload = {
            "model": format_model_name(list(skills), pin=self.pin_revisions),
            "messages": [{"role": m["role"], "content": _text(m.get("content"))} for m in messages],
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "stream": False,
        }
        body = self._post("/chat/completions", payload)
        try:
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            return Generation(
                text=str(choice["message"]["content"] or "").strip(),
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
            )
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise OperatorError(
                f"{self.base_url} answered a chat completion without choices[0].message.content ({error!r})",
                hint="is it an OpenAI-compatible server?",
            ) from error

    def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Generation]:
        """Send the requests concurrently; results in order. Raises the first failure after all have finished."""
        if len(requests) <= 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(min(self.max_concurrency, len(requests)), thread_name_prefix="habitloop-http") as pool:
            futures = [pool.submit(self._one, r) for r in requests]
        return [future.result() for future in futures]

    # ------------------------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIChatModel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ internals

    def _one(self, request: ChatRequest) -> Generation:
        return self.generate(
            request.messages,
            skills=request.skills,
            max_new_tokens=request.max_new_tokens,
            temperature=request.temperature,
        )

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, json=payload)

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise OperatorError(
                f"{self.base_url}{path} did not answer in time ({error!r})",
                hint="raise `timeout`, or check the server's load",
            ) from error
        except httpx.HTTPError as error:
            raise OperatorError(
                f"cannot reach {self.base_url}{path} ({error!r})", hint="is the server running at that address?"
            ) from error
        if response.status_code >= 400:
            raise _error_for(response, f"{self.base_url}{path}")
        try:
            body = response.json()
        except ValueError as error:
            raise OperatorError(f"{self.base_url}{path} answered with something that is not JSON") from error
        if not isinstance(body, dict):
            raise OperatorError(f"{self.base_url}{path} answered JSON that is not an object")
        return body


def _text(content: Any) -> str:
    """Message content as one string (our messages carry strings; OpenAI-style content parts are joined)."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def _error_for(response: httpx.Response, where: str) -> Exception:
    """The habitloop error for an HTTP error, carrying the server's own message (OpenAI's `{"error": {...}}`)."""
    message = response.text[:500]
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
        elif isinstance(error, str):
            message = error
    except (ValueError, AttributeError):
        pass
    status = response.status_code
    text = f"{where} answered {status}: {message}"
    if status == 404:
        return SkillNotFoundError(text, hint="list the server's models with GET /v1/models")
    if status in (401, 403):
        return UserError(text, hint="pass the server's API key (api_key=...)")
    if status < 500:
        return UserError(text)
    return OperatorError(text, hint="see the server's log")
