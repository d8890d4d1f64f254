"""A failure in a background thread, kept until the owner's next call raises it, once.

The async checkpointer, the manager's finalize thread and the background deleter all
work behind the caller's back; none may only log a failure. Each keeps one
`BackgroundFailure` and calls `raise_once()` at the top of its next public call.
"""

from __future__ import annotations

import threading


class BackgroundFailure:
    """Holds the first failure of background work until `raise_once()` hands it over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def store(self, error: BaseException, *, cause: BaseException | None = None) -> None:
        """Keeps `error`, caused by `cause` (the first one, if several arrive before the
        owner looks)."""
        if cause is not None and error is not cause:
            error.__cause__ = cause
        with self._lock:
            if self._error is None:
                self._error = error

    def raise_once(self) -> None:
        """Raises the stored failure, if any, and forgets it."""
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error
