"""The C heap: giving freed memory back to the system between the big steps of training and generation.

A training step allocates and frees hundreds of MB of activations, a batched generation its KV cache; glibc keeps
what is freed in its arenas, and with a new tensor shape every step its free lists fragment, so the process grows
although little is in use: on the BFCL headline demonstrations 1.0-1.7 GB of a 3.4 GB training process was free heap
after 60-100 steps (docs/training-memory.md). `malloc_trim(0)` returns those pages; it costs milliseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


def return_free_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's `malloc_trim`; a no-op where there is none)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None
    return trim
