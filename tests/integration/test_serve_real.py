"""`habitloop serve` as users start it: its own process on the real base, an OpenAI client, an API key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from agent import Settings
from agent.backends.local import LocalChatModel
from agent.testing import random_adapter
from skills import Residency, SkillStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_real_base_with_the_openai_client(real_base: Any, real_settings: Settings, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(real_settings.models_dir.resolve(), target_is_directory=True)
    store = SkillStore(home / "skills", base_fingerprint=real_base.fingerprint)
    store.create("probe", random_adapter(real_base, tmp_path / "probe", seed=3), kind="tool_habit")
    port = _free_port()
    env = {**os.environ, "HABITLOOP_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "agent.cli",
        "serve",
        "--port",
        str(port),
        "--api-key",
        "k",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else server.returncode
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "habitloop serve did not start"
            time.sleep(0.5)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0, timeout=300)
        assert [m.id for m in client.models.list()] == ["base", "probe"]
        messages: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
        reply = client.chat.completions.create(model="base", messages=messages, max_tokens=8)
        text = reply.choices[0].message.content
        assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8
        # the server answers exactly what the same base answers in this process (greedy)
        local = LocalChatModel(real_base, Residency(real_base.model, store)).generate(messages, max_new_tokens=8)
        assert text == local.text
        # streamed token by token: the pieces join up to the same reply
        chunks = list(client.chat.completions.create(model="base", messages=messages, max_tokens=8, stream=True))
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(pieces) == text and len(pieces) > 1
        streamed = client.chat.completions.create(model="probe@1", messages=messages, max_tokens=8, stream=True)
        skill_text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert skill_text.strip()
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
    finally:
        server.terminate()
        server.wait(30)
