"""Small file-system helpers shared by the store and the trainer: atomic writes and adapter-folder checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from skills.errors import InvalidAdapterError, UnsafeArchiveError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
# Files that unpickle on load: refused everywhere, whatever their name says.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_ARCHIVE_MEMBER = 4 << 30  # 4 GiB: far above any LoRA adapter, far below filling a disk by accident
# What reading a damaged or truncated archive can raise (gzip and tar both report errors their own way).
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


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


# ------------------------------------------------------------------------------------------------ archives
# The one tar validator: skill exports (`SkillStore.import_archive`) and skill packs (`skills.packs`) both read
# archives member by member through these checks, then apply their own allow-list of member names.


def open_archive(archive: Path, *, label: str) -> tarfile.TarFile:
    """Open a (possibly gzipped) tar archive for reading; `InvalidAdapterError` if it is not one."""
    try:
        return tarfile.open(archive, mode="r:*")
    except ARCHIVE_ERRORS as error:
        raise InvalidAdapterError(f"{label}: not a readable tar archive: {error}") from error


def check_archive_member(member: tarfile.TarInfo, *, label: str, max_size: int = MAX_ARCHIVE_MEMBER) -> tuple[str, ...]:
    """The path parts of a member that is safe to extract, `()` for a directory; `UnsafeArchiveError` otherwise.

    Refused: absolute, `..` or backslash paths, links (which could point outside the target), device files, FIFOs
    and anything else that is not a regular file, pickle weights (they run code when loaded), oversized members.
    """
    raw = member.name
    path = PurePosixPath(raw)
    if raw.startswith(("/", "\\")) or path.is_absolute() or ".." in path.parts or "\\" in raw:
        raise UnsafeArchiveError(f"{label}: member {raw!r} has an absolute or '..' path")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"{label}: member {raw!r} is a link, which could point outside the store")
    if member.isdir():
        return ()
    if not member.isreg():
        raise UnsafeArchiveError(f"{label}: member {raw!r} is not a regular file")
    if raw.endswith(PICKLE_SUFFIXES):
        raise UnsafeArchiveError(
            f"{label}: member {raw!r} is a pickle weight file, which could run code when loaded",
            hint="export adapters as safetensors",
        )
    if member.size > max_size:
        raise UnsafeArchiveError(f"{label}: member {raw!r} is {member.size} bytes, over the limit")
    parts = tuple(part for part in path.parts if part != ".")
    if not parts:
        raise UnsafeArchiveError(f"{label}: member {raw!r} has an empty path")
    return parts


def extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, *, label: str) -> None:
    """Copy one checked regular member's bytes to `target` (never `tar.extract`: no metadata, modes or links)."""
    handle = tar.extractfile(member)
    if handle is None:
        raise UnsafeArchiveError(f"{label}: member {member.name!r} cannot be read")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        shutil.copyfileobj(handle, out)
