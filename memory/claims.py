"""Claims: one process consolidates a skill at a time, in a candidate folder only it may use.

A claim is a per-skill file lock, `<store>/.locks/<skill>.lock` (not the store's own lock, which is held only for the
short commit), and the folder it guards, `<store>/.candidates/<skill>/`, where the candidate is trained. A folder
whose lock is free belongs to a process that died: it is stale, and whoever takes the lock next recovers what it can
from it (`recover`, given by the consolidator) and removes it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCKS = ".locks"  # under the store's root: one lock file per skill being consolidated
CANDIDATES = ".candidates"  # under the store's root: one folder per skill being consolidated, held by its lock


class SkillClaims:
    """The claims under one store's `root`; `recover(folder)` is shown each stale candidate folder before it goes."""

    def __init__(self, root: Path, *, recover: Callable[[Path], None]) -> None:
        self.root = root
        self.recover = recover
        # One lock object per skill: filelock counts re-entries per object, so claims of one skill nest.
        self._locks: dict[str, FileLock] = {}

    @contextmanager
    def claim(self, name: str, timeout: float) -> Iterator[Path | None]:
        """Hold skill `name`'s lock (waiting at most `timeout` s) and yield its candidate folder, or None when another
        process holds it. The outermost claim clears what a crashed holder left there first, and removes the folder
        when it ends."""
        key = name.rsplit("/", 1)[-1]  # a personal view's `alice/x` is the folder `x` of alice's own store
        lock = self._locks.get(key)
        if lock is None:
            (self.root / LOCKS).mkdir(parents=True, exist_ok=True)
            lock = self._locks[key] = FileLock(str(self.root / LOCKS / f"{key}.lock"))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            yield None
            return
        work = self.root / CANDIDATES / key
        outermost = lock.lock_counter == 1
        try:
            if outermost:
                self._clear(work)
                work.mkdir(parents=True)
            yield work
            if outermost:
                shutil.rmtree(work, ignore_errors=True)
        finally:
            lock.release()

    def sweep(self) -> None:
        """Clear the candidate folders no live process holds (each one's lock is free)."""
        folder = self.root / CANDIDATES
        if not folder.is_dir():
            return
        for leftover in sorted(folder.iterdir()):
            key = leftover.name
            (self.root / LOCKS).mkdir(exist_ok=True)
            lock = self._locks.get(key) or FileLock(str(self.root / LOCKS / f"{key}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # a live consolidation's folder
            try:
                if lock.lock_counter == 1:  # not one of our own claims in progress
                    self._clear(leftover)
            finally:
                lock.release()

    def _clear(self, work: Path) -> None:
        """A stale candidate folder (its lock is held by us): recover it, then remove it."""
        if not work.exists():
            return
        self.recover(work)
        shutil.rmtree(work, ignore_errors=True)
