"""Shared fixtures for the unit suite: the tiny base model, a store on it, and small trained adapters.

Training even a tiny adapter costs a fraction of a second, so the adapters most tests need are trained once per
session (`trained`) and copied into each test's own folder (`adapter`); tests that are about training itself call
`train_adapter`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from agent.testing import tiny_base
from skills import ChatExample, SkillStore, TrainConfig, TrainResult, train_lora

# Deadlines only make the suite flaky on slow CI cores (the first example also pays for lazy imports of torch).
settings.register_profile("habitloop", deadline=None, print_blob=True)
settings.load_profile("habitloop")

# Small, distinct, memorisable datasets: one adapter per dataset, so two adapters give different outputs.
DATASETS: dict[str, list[ChatExample]] = {
    "alpha": [
        ChatExample.from_pair("ping", "pong"),
        ChatExample.from_pair("2+2?", "4", system="You add numbers."),
    ],
    "beta": [
        ChatExample.from_pair("colour of the sky?", "blue, mostly"),
        ChatExample.from_pair("hello", "HELLO!!"),
    ],
    "gamma": [ChatExample.from_pair("call the tool", '{"tool": "search", "args": {"q": "x"}}')],
}
# A high learning rate so that three steps move the weights far enough for logits to differ clearly.
QUICK = TrainConfig(steps=3, batch_size=2, learning_rate=1e-2, seed=0)


@pytest.fixture(scope="session")
def datasets() -> dict[str, list[ChatExample]]:
    """The small training sets the session adapters were trained on (test modules must not import conftest)."""
    return DATASETS


@pytest.fixture(scope="session")
def quick() -> TrainConfig:
    """The quick recipe (3 steps, high learning rate) the session adapters were trained with."""
    return QUICK


@pytest.fixture(scope="session")
def tiny() -> Any:
    """The session's tiny base. Training leaves it unchanged; never hand it to a `Residency` (that wraps it)."""
    return tiny_base()


@pytest.fixture
def fresh_base() -> Any:
    """A private copy of the same tiny base (same seed, same weights, same fingerprint), free to be wrapped."""
    return tiny_base()


@pytest.fixture
def store(tmp_path: Path, tiny: Any) -> SkillStore:
    return SkillStore(tmp_path / "skills", base_fingerprint=tiny.fingerprint)


@pytest.fixture
def train_adapter(tiny: Any, tmp_path: Path) -> Callable[..., TrainResult]:
    """Train a small adapter on the session base into a fresh folder under tmp_path; returns the `TrainResult`."""
    counter = iter(range(1_000_000))

    def train(
        examples: Sequence[ChatExample] | None = None,
        *,
        config: TrainConfig = QUICK,
        model: Any = None,
        out_dir: Path | None = None,
        **kwargs: Any,
    ) -> TrainResult:
        out = out_dir or tmp_path / f"trained-{next(counter)}"
        return train_lora(
            tiny.model if model is None else model,
            tiny.tokenizer,
            list(examples or DATASETS["alpha"]),
            out,
            config=config,
            progress=False,
            **kwargs,
        )

    return train


@pytest.fixture(scope="session")
def trained(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One adapter folder per dataset, trained once per session. Read-only: copy before changing (see `adapter`)."""
    root = tmp_path_factory.mktemp("trained")
    folders = {}
    for seed, (name, examples) in enumerate(DATASETS.items()):
        config = QUICK.model_copy(update={"seed": seed})
        train_lora(tiny.model, tiny.tokenizer, examples, root / name, config=config, progress=False)
        folders[name] = root / name
    return folders


@pytest.fixture
def adapter(trained: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """Copy a session-trained adapter ("alpha", "beta" or "gamma") into a new folder of this test and return it."""
    counter = iter(range(1_000_000))

    def copy(which: str = "alpha") -> Path:
        dest = tmp_path / "adapters" / f"{which}-{next(counter)}"
        shutil.copytree(trained[which], dest)
        return dest

    return copy


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): on 2 busy cores
    the tiny model's small ops ran ~50x slower with 2 threads (measured)."""
    import torch

    from skills.threads import pin_threads

    previous = torch.get_num_threads()
    pin_threads(1)  # training's FairShare leaves pinned threads alone
    yield
    pin_threads(None)
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def loud(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three random adapters for the tiny base, big enough to change what it says (trained ones barely do), of
    different ranks and target modules. Shared: copy one before handing it to a store."""
    from agent.testing import random_adapter

    root, base = tmp_path_factory.mktemp("loud"), tiny_base()
    shapes = {"a": (8, ("q_proj", "v_proj")), "b": (4, ("q_proj", "v_proj", "o_proj")), "c": (2, ("down_proj",))}
    return {
        name: random_adapter(base, root / name, seed=seed, r=r, target_modules=targets, std=2.0)
        for seed, (name, (r, targets)) in enumerate(shapes.items())
    }
