"""Small file-system helpers shared by the store and the trainer: atomic writes and adapter-folder checks."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from skills.errors import InvalidAdapterError, UnsafeArchiveError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
# Files that unpickle on load: refused everywhere, whatever their name says.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_ARCHIVE_MEMBER = 4 << 30  # 4 GiB: far above any LoRA adapter, far below filling a disk by accident
# What reading a damaged or truncated archive can raise (gzip and tar both report errors their own way).
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)


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
# archives member by member through these checks, then apply their own allow-list of member names. Every extraction
# draws on one `ArchiveBudget`, so what an archive may unpack is bounded however it is compressed or nested.

MAX_SKILL_ARCHIVE_BYTES = 4 << 30  # a skill export unpacked: all its revisions' adapters (a 135M base's are ~1 MB)
MAX_ARCHIVE_MEMBERS = 10_000  # three files a revision: room for thousands of revisions
MAX_TAR_HEADER = 1 << 20  # a GNU long name or pax record, which tarfile reads whole into memory: paths are < 4 KiB
# Files that run instead of a module's reviewed source when Python imports it (refused in every archive).
BYTECODE_SUFFIXES = (".pyc", ".pyo")
_COPY_CHUNK = 64 << 10  # member data is read in chunks this size; only tar's own header reads are larger
_TAR_OVERHEAD = 4 << 10  # per member: its header, a pax record and padding
# Magic bytes -> a reader of the decompressed stream (what `tarfile.open(mode="r:*")` would pick).
_COMPRESSED: dict[bytes, Callable[[BinaryIO], io.BufferedIOBase]] = {
    b"\x1f\x8b": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    b"BZh": lambda raw: bz2.BZ2File(raw, mode="rb"),
    b"\xfd7zXZ\x00": lambda raw: lzma.LZMAFile(raw, mode="rb"),
}
_OVER_BUDGET_HINT = "LoRA adapters take a few MB; make the archive with `habitloop skills export` / `packs create`"


@dataclass
class ArchiveBudget:
    """What extracting an archive may still unpack: bytes (counted as written, not as headers declare) and members.

    One budget can span nested archives: a pack hands its budget to the store's import of each skill archive inside
    it, so a small pack can never unpack into more than its own limit, however deeply its contents are compressed.
    """

    owner: str  # whose limit this is, for the error ("pack demo.tar.gz")
    max_bytes: int = MAX_SKILL_ARCHIVE_BYTES
    max_members: int = MAX_ARCHIVE_MEMBERS
    bytes_used: int = 0
    members_used: int = 0

    def admit(self, name: str, size: int, *, label: str) -> None:
        """Count one member (or file) and refuse it before any of its bytes are read if its declared size cannot fit."""
        self.members_used += 1
        if self.members_used > self.max_members:
            raise UnsafeArchiveError(
                f"{label}: more than {self.max_members} members{self._whose(label)}", hint=_OVER_BUDGET_HINT
            )
        if size > min(MAX_ARCHIVE_MEMBER, self.max_bytes - self.bytes_used):
            self._refuse(name, label)

    def spend(self, count: int, *, name: str, label: str) -> None:
        """Count `count` bytes just read for member `name`; refuse once the total passes the limit."""
        self.bytes_used += count
        if self.bytes_used > self.max_bytes:
            self._refuse(name, label)

    def stream_limit(self) -> int:
        """How many decompressed bytes one archive may span: the data still allowed plus tar's own overhead."""
        return max(self.max_bytes - self.bytes_used, 0) + _TAR_OVERHEAD * (self.max_members - self.members_used + 3)

    def _whose(self, label: str) -> str:
        return "" if label == self.owner else f" ({self.owner} in all)"

    def _refuse(self, name: str, label: str) -> None:
        whose = "it" if label == self.owner else f"{self.owner} (archives inside it included)"
        raise UnsafeArchiveError(
            f"{label}: member {name!r} takes {whose} past {human_size(self.max_bytes)} unpacked", hint=_OVER_BUDGET_HINT
        )


def human_size(count: int) -> str:
    """`4 GiB`, `512 MiB` or `4,096 bytes`: a limit as an error message states it."""
    for shift, unit in ((30, "GiB"), (20, "MiB")):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.3g} {unit}"
    return f"{count:,} bytes"


class _BoundedStream(io.RawIOBase):
    """An archive's decompressed bytes, refused past `limit` in all and past `MAX_TAR_HEADER` in one read.

    `tarfile` reads a GNU long name or a pax record whole, in one read, while it parses a header, before any check of
    ours can see the member: a few MB of gzip could otherwise make it hold GBs in memory.
    """

    def __init__(self, inner: io.BufferedIOBase, *, limit: int, label: str) -> None:
        super().__init__()
        self._inner = inner
        self._limit = limit
        self._label = label

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._inner.tell() + offset if whence == io.SEEK_CUR else None
        if target is not None and target > self._limit:
            self._refuse()
        return self._inner.seek(offset, whence)

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > MAX_TAR_HEADER:  # member data comes in _COPY_CHUNK reads
            raise UnsafeArchiveError(
                f"{self._label}: a tar header holds {size:,} bytes, over the limit of {human_size(MAX_TAR_HEADER)}",
                hint=_OVER_BUDGET_HINT,
            )
        room = self._limit - self._inner.tell()
        data = self._inner.read(room + 1 if size is None or size < 0 or size > room else size)
        if len(data) > room:
            self._refuse()
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _refuse(self) -> None:
        raise UnsafeArchiveError(
            f"{self._label}: unpacks to more than {human_size(self._limit)} (tar headers included)",
            hint=_OVER_BUDGET_HINT,
        )


@contextmanager
def open_archive(archive: Path, *, label: str, budget: ArchiveBudget) -> Iterator[tarfile.TarFile]:
    """Open a tar archive (plain, gzip, bzip2 or xz) for reading within `budget`; `InvalidAdapterError` if it is
    not one. The decompressed stream itself is bounded (see `_BoundedStream`), not only the members we extract."""
    with ExitStack() as stack:
        try:
            raw = stack.enter_context(archive.open("rb"))
            magic = raw.read(6)
            raw.seek(0)
            opener = next((o for prefix, o in _COMPRESSED.items() if magic.startswith(prefix)), None)
            stream = stack.enter_context(opener(raw)) if opener else raw
            bounded = _BoundedStream(stream, limit=budget.stream_limit(), label=label)
            tar = stack.enter_context(tarfile.open(fileobj=bounded, mode="r:"))
        except ARCHIVE_ERRORS as error:
            raise InvalidAdapterError(f"{label}: not a readable tar archive: {error}") from error
        yield tar


def is_bytecode(parts: tuple[str, ...]) -> bool:
    """Whether a path inside an archive or pack is Python bytecode, or in a `__pycache__` folder."""
    return "__pycache__" in parts or (bool(parts) and parts[-1].lower().endswith(BYTECODE_SUFFIXES))


def check_archive_member(member: tarfile.TarInfo, *, label: str, budget: ArchiveBudget) -> tuple[str, ...]:
    """The path parts of a member that is safe to extract, `()` for a directory; `UnsafeArchiveError` otherwise.

    Refused: absolute, `..` or backslash paths, links (which could point outside the target), device files, FIFOs
    and anything else that is not a regular file, pickle weights (they run code when loaded), Python bytecode (it
    runs instead of the source a reviewer read), members past the budget's count or size.
    """
    raw = member.name
    path = PurePosixPath(raw)
    if raw.startswith(("/", "\\")) or path.is_absolute() or ".." in path.parts or "\\" in raw:
        raise UnsafeArchiveError(f"{label}: member {raw!r} has an absolute or '..' path")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"{label}: member {raw!r} is a link, which could point outside the store")
    budget.admit(raw, member.size, label=label)
    if member.isdir():
        return ()
    if not member.isreg():
        raise UnsafeArchiveError(f"{label}: member {raw!r} is not a regular file")
    if raw.lower().endswith(PICKLE_SUFFIXES):
        raise UnsafeArchiveError(
            f"{label}: member {raw!r} is a pickle weight file, which could run code when loaded",
            hint="export adapters as safetensors",
        )
    parts = tuple(part for part in path.parts if part != ".")
    if not parts:
        raise UnsafeArchiveError(f"{label}: member {raw!r} has an empty path")
    if is_bytecode(parts):
        raise UnsafeArchiveError(
            f"{label}: member {raw!r} is Python bytecode, which would run instead of the reviewed .py source",
            hint="ship .py sources only (Python compiles them itself); remove __pycache__, .pyc and .pyo files",
        )
    return parts


def copy_counted(
    source: IO[bytes], target: Path, *, declared: int, name: str, label: str, budget: ArchiveBudget
) -> None:
    """Copy `source` to a new file `target`, counting every byte against `budget` and refusing more than `declared`.

    The one copy loop of every extraction (archive members and pack folders' files alike)."""
    if target.exists():
        raise UnsafeArchiveError(f"{label}: member {name!r} appears twice")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with target.open("xb") as out:
        while chunk := source.read(_COPY_CHUNK):
            written += len(chunk)
            if written > declared:
                raise UnsafeArchiveError(f"{label}: member {name!r} holds more bytes than its header declares")
            budget.spend(len(chunk), name=name, label=label)
            out.write(chunk)


def extract_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, *, label: str, budget: ArchiveBudget
) -> None:
    """Copy one checked regular member's bytes to `target` (never `tar.extract`: no metadata, modes or links)."""
    handle = tar.extractfile(member)
    if handle is None:
        raise UnsafeArchiveError(f"{label}: member {member.name!r} cannot be read")
    with handle:
        copy_counted(handle, target, declared=member.size, name=member.name, label=label, budget=budget)
