"""Small file-system helpers shared by the store and the trainer: atomic writes and adapter-folder checks."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from skills.errors import InvalidAdapterError, UnsafeArchiveError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
# Files that unpickle on load: refused everywhere, whatever their name says.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so that a rename inside it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and `os.replace`: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_adapter_dir(path: Path, *, label: str) -> dict[str, Any]:
    """Check that `path` is a LoRA adapter in PEFT's safetensors format and return its `adapter_config.json`.

    Refuses pickle weight files and links before reading anything, so a hostile folder is never unpickled.
    """
    if not path.is_dir():
        raise InvalidAdapterError(f"{label}: {path} is not a folder", hint="pass a folder saved by peft")
    for entry in path.iterdir():
        if entry.is_symlink():
            raise UnsafeArchiveError(f"{label}: {entry.name} is a link", hint="copy the real file in its place")
        if entry.name.endswith(PICKLE_SUFFIXES):
            raise UnsafeArchiveError(
                f"{label}: {entry.name} is a pickle weight file, which could run code when loaded",
                hint="save the adapter with safetensors (peft's default)",
            )
    for name in ADAPTER_FILES:
        if not (path / name).is_file():
            raise InvalidAdapterError(f"{label}: {name} is missing in {path}", hint="save the adapter with peft")
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as error:
        raise InvalidAdapterError(f"{label}: {ADAPTER_CONFIG} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise InvalidAdapterError(f"{label}: {ADAPTER_CONFIG} is not a JSON object")
    return config


def read_safetensors(path: Path, *, label: str, data: bytes | None = None) -> dict[str, Any]:
    """Tensors of a safetensors file, as private CPU copies; a truncated or garbled file raises `InvalidAdapterError`.

    The file is read into memory first (`data`, if the caller already read and checksummed it) and parsed from those
    bytes: `safetensors.torch.load_file` would memory-map the file, so a later rewrite of the file would silently
    change tensors already checked and loaded (and truncating it would kill the process with SIGBUS).
    """
    from safetensors.torch import load

    try:
        return load(path.read_bytes() if data is None else data)
    except Exception as error:  # safetensors raises its own SafetensorError, OSError or ValueError
        raise InvalidAdapterError(f"{label}: {path.name} is not a readable safetensors file: {error}") from error


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an adapter, for a revision's provenance."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "transformers", "peft", "safetensors", "habitloop"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions
