"""skills/threads.py: FairShare, torch threads that follow the cores other processes leave free, unless pinned."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import torch

import skills.threads as threads
from skills.threads import CpuSample, FairShare, pin_threads

# ------------------------------------------------------------------------------------------------ FairShare


class Clock:
    """Counters as /proc/stat and os.times would give them: each `tick` advances the wall clock by `wall` seconds,
    this process by `own` CPU seconds and everyone (this process included) by `busy`."""

    def __init__(self) -> None:
        self.now = CpuSample(0.0, 0.0, 0.0)

    def tick(self, *, wall: float, own: float, others: float) -> None:
        self.now = CpuSample(self.now.wall + wall, self.now.busy + own + others, self.now.own + own)

    def __call__(self) -> CpuSample:
        return self.now


@pytest.fixture
def restore_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    yield
    pin_threads(None)
    torch.set_num_threads(previous)


@pytest.mark.usefixtures("restore_threads")
def test_threads_follow_the_cores_other_processes_leave_free() -> None:
    clock = Clock()
    share = FairShare(cores=4, sample=clock)
    clock.tick(wall=4.0, own=16.0, others=0.0)  # alone: all four cores
    assert share.adjust() == 4 == torch.get_num_threads()
    clock.tick(wall=4.0, own=8.0, others=8.0)  # another process took two cores' worth
    assert share.adjust() == 2 == torch.get_num_threads()
    clock.tick(wall=4.0, own=4.0, others=15.0)  # more than the machine: still one thread, never none
    assert share.adjust() == 1
    clock.tick(wall=0.5, own=0.5, others=0.0)  # too short a window to judge: unchanged
    assert share.adjust() == 1
    clock.tick(wall=4.0, own=4.0, others=0.0)  # the others are gone (the short window counts with this one)
    assert share.adjust() == 4


@pytest.mark.usefixtures("restore_threads")
def test_pinned_threads_are_never_changed() -> None:
    clock = Clock()
    pin_threads(1)
    share = FairShare(cores=4, sample=clock)
    clock.tick(wall=4.0, own=4.0, others=0.0)
    assert share.adjust() == 1 == torch.get_num_threads()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to share")
@pytest.mark.usefixtures("restore_threads")
def test_a_busy_loop_on_one_core_takes_a_thread_away() -> None:
    """The real counters (/proc/stat, os.times): a competing busy process is seen and its core left to it."""
    share = FairShare()
    rival = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(2.0)
        assert share.adjust() <= share.cores - 1
    finally:
        rival.kill()
        rival.wait()


@pytest.mark.usefixtures("restore_threads")
def test_without_the_counters_the_threads_stay_torchs_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """No /proc/stat (macOS, Windows): training and generation still run, on torch's own threads."""
    monkeypatch.setattr(threads, "COUNTERS_READABLE", False)
    monkeypatch.setattr(threads, "_process_share", None)
    torch.set_num_threads(1)
    assert threads.share_cores() == 1 and threads._process_share is None
