"""Handing the memory a finished save freed back to the operating system.

A save's encoded chunks are allocated and freed by TensorStore's worker threads. glibc's
allocator keeps freed blocks in per-thread arenas for reuse, so across consecutive
saves the process's RSS creeps up (about 1.7 MiB per 256 MiB save, measured by the
benchmark suite) although nothing leaks. `malloc_trim(0)` returns the free pages of
every arena; it costs a few milliseconds and runs once per save, in the thread that
finished it. Where the C library has no `malloc_trim` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Returns free allocator pages to the OS; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
