"""Nothing in flight is lost when the process exits, and the exit keeps its own status.

Background saves run in daemon threads. Left alone at interpreter exit, they would be
cut off mid-write (the process aborts with "terminate called without an active
exception" while TensorStore is writing, and the step is lost). So every open
checkpointer and manager registers here; at exit (end of script, `sys.exit`, an uncaught
exception, one Ctrl-C) each is closed, which waits for its save to commit. A Ctrl-C
while waiting (the second, after the one that ended the script) abandons the saves in
flight: they stop before their commit, so the step stays uncommitted and nothing
committed is touched. One more ends the process at once. The process's exit status is
never changed.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from jaxpoint.core.multihost.preemption import on_second_sigterm

logger = logging.getLogger(__name__)

# What a shell reports for a process ended by Ctrl-C.
_INTERRUPTED_STATUS = 130


class Guarded(Protocol):
    def pending_save(self) -> str | None:
        """What is in flight, for the log ("step 10 at /ckpt/10"), or None."""
        ...

    def close(self) -> None: ...

    def abandon_pending_save(self) -> None:
        """Makes the save in flight stop before its commit (thread-safe)."""
        ...


_open: weakref.WeakSet[Guarded] = weakref.WeakSet()
_lock = threading.Lock()


def guard(owner: Guarded) -> None:
    """Finishes `owner`'s save in flight at interpreter exit, unless it was closed."""
    with _lock:
        _open.add(owner)


def unguard(owner: Guarded) -> None:
    with _lock:
        _open.discard(owner)


def _owners() -> list[Guarded]:
    with _lock:
        return list(_open)


def finish_pending_saves(reason: str) -> None:
    """Closes every open checkpointer and manager, waiting for the saves in flight."""
    for owner in _owners():
        pending = owner.pending_save()
        if pending is not None:
            logger.info("%s: waiting for the save of %s to commit.", reason, pending)
        try:
            owner.close()
        except Exception as error:  # the others must still be closed
            logger.error("%s: the save of %s failed: %s", reason, pending or "a checkpoint",
                         error)
            continue
        if pending is not None:
            logger.info("%s: the save of %s committed.", reason, pending)


def wait_or_abandon(owner: Guarded, wait: Callable[[], None]) -> None:
    """Runs `wait` (a `close()` waiting for the save in flight); a Ctrl-C during it that
    follows an earlier one abandons `owner`'s save.

    This is the second Ctrl-C that lands in `close()` called by a `with` block the first
    one is leaving: Python raises it as a KeyboardInterrupt whose context is the first,
    before the interpreter exits, so `_at_exit`'s handler never sees it.
    """
    # Read first: on Python 3.11 an interrupted Thread.join() marks the still-running
    # thread as stopped (bpo-45274), so the owner would report nothing in flight after.
    pending = owner.pending_save()
    try:
        wait()
    except KeyboardInterrupt as interrupt:
        if _follows_an_interrupt(interrupt):
            logger.warning("Second Ctrl-C: abandoning the save of %s; it stays uncommitted "
                           "and earlier checkpoints are intact.", pending or "a checkpoint")
            owner.abandon_pending_save()
        raise


def _follows_an_interrupt(interrupt: BaseException) -> bool:
    earlier = interrupt.__context__
    while earlier is not None:
        if isinstance(earlier, KeyboardInterrupt):
            return True
        earlier = earlier.__context__
    return False


def _abandon_pending_saves() -> None:
    for owner in _owners():
        pending = owner.pending_save()
        if pending is not None:
            logger.warning("Ctrl-C while exiting: abandoning the save of %s; it stays "
                           "uncommitted and earlier checkpoints are intact.", pending)
        owner.abandon_pending_save()


class _InterruptsWhileExiting:
    """SIGINT while exiting: the first abandons the saves in flight, the next exits now.

    A handler rather than KeyboardInterrupt, which would unwind through the `close()`
    calls and their `finally` blocks, which wait for the save again.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            _abandon_pending_saves()
            return
        logger.warning("Ctrl-C again: exiting now; the save in flight stays uncommitted.")
        os._exit(_INTERRUPTED_STATUS)


def _at_exit() -> None:
    if not _owners():
        return
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _InterruptsWhileExiting())
    try:
        finish_pending_saves("Process exiting")
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


atexit.register(_at_exit)
on_second_sigterm(lambda: finish_pending_saves("Second SIGTERM"))
