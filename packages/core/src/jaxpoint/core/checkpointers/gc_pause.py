"""Cyclic garbage collection paused while a checkpoint call builds many small objects.

A tree of thousands of leaves makes hundreds of thousands of short-lived Python objects
(records, plans, buffers, arrays), and every collection pass that those allocations
trigger walks all the live ones: a quarter of a 10,000-leaf restore went there. The
save and restore paths make no reference cycles worth collecting, so the pause loses
nothing; collection resumes when the outermost pause ends. Background writes never
pause it: they run while the caller's own code allocates.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_resume = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disables the cyclic collector inside; nests, and across threads keeps one count."""
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
