"""How many torch threads this process runs on: as many as the cores other processes leave it, unless pinned.

torch's CPU kernels run on an OpenMP team (GNU libgomp in the pip wheels) of one thread per core. When another
CPU-bound process shares the cores, a team-mate is set aside by the scheduler at every barrier and the others spin or
wait for it: measured on 2 cores (`scripts/contention.py`, docs/training-memory.md), two 2-thread trainings side by
side each ran at 39 tokens/s, 0.13x of one alone (313); beside a busy loop 103 (0.33x); decoding beside the busy loop
fell from 23 to 8 tokens/s. With one thread each, the two trainings kept 165 tokens/s apiece. `FairShare` sets the
threads to the free cores, re-measured between steps; `pin_threads` (`HABITLOOP_THREADS`) fixes them instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NamedTuple

COUNTERS_READABLE = hasattr(os, "sched_getaffinity") and os.path.isfile("/proc/stat")  # Linux
_pinned: int | None = None  # threads the user fixed (HABITLOOP_THREADS): no share is taken from or given to them


def pin_threads(threads: int | None) -> None:
    """Fix torch's intra-op threads for this process (`HABITLOOP_THREADS`); `FairShare` then leaves them alone.

    `None` unpins (the threads stay as they are, `FairShare` may change them again)."""
    global _pinned
    _pinned = threads
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def threads_pinned() -> bool:
    return _pinned is not None


class CpuSample(NamedTuple):
    wall: float  # seconds, monotonic
    busy: float  # CPU seconds all processes spent on this process's cores
    own: float  # CPU seconds this process spent


def cpu_sample() -> CpuSample:
    """The counters `FairShare` compares: /proc/stat's busy time on the cores this process may run on, and its own."""
    allowed = os.sched_getaffinity(0)
    tick = os.sysconf("SC_CLK_TCK")
    busy = 0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in allowed:
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
                busy += user + nice + system + irq + softirq + steal
    times = os.times()
    return CpuSample(time.monotonic(), busy / tick, times.user + times.system)


class FairShare:
    """Keeps this process's torch threads at the cores the other processes leave it, re-measured between steps.

    Each `adjust` compares the CPU time all processes spent on this process's cores since the last call with its own,
    and sets the threads to the cores left (at least 1, at most the cores): alone it keeps every core, beside one
    busy process on 2 cores it runs one thread (the measurements are in this module's docstring). Threads pinned by
    the user (`pin_threads`) are never changed; set `HABITLOOP_THREADS` for training that is bitwise reproducible
    (a thread count changes the order of float reductions).
    """

    min_window_s = 1.0  # shorter windows are noise: keep the current threads

    def __init__(self, *, cores: int | None = None, sample: Callable[[], CpuSample] = cpu_sample) -> None:
        self.cores = cores or len(os.sched_getaffinity(0))
        self._sample = sample
        self._last = sample()

    def adjust(self) -> int:
        """Set torch's threads to the free cores measured since the last call; return the threads now in use."""
        import torch

        current = torch.get_num_threads()
        now = self._sample()
        window = now.wall - self._last.wall
        if threads_pinned() or window < self.min_window_s:
            return current
        others = max(0.0, (now.busy - self._last.busy) - (now.own - self._last.own)) / window
        self._last = now
        wanted = max(1, min(self.cores, round(self.cores - others)))
        if wanted != current:
            torch.set_num_threads(wanted)
        return wanted


_process_share: FairShare | None = None


def share_cores() -> int:
    """Before (or between) each piece of heavy work: the process's one `FairShare` re-measures and sets the threads.

    Training calls it after every step, generation before every batch; the first call starts the measurement.
    Returns the torch threads now in use. Where the counters are not there to read (no /proc/stat, no CPU affinity:
    macOS, Windows) the threads stay torch's own.
    """
    import torch

    global _process_share
    if not COUNTERS_READABLE:
        return torch.get_num_threads()
    if _process_share is None:
        _process_share = FairShare()
        return torch.get_num_threads()
    return _process_share.adjust()
