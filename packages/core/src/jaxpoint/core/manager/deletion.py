"""Deleting step folders: safely, honouring read leases, optionally in the background.

A deletion is the commit protocol's `uncommit` (see storage/commit.py): it never leaves a
half-deleted step that looks committed, and a step another manager already deleted counts
as deleted. With `todelete_subdir` the step is moved to `<root>/<todelete_subdir>/` instead.
A step that a reader in another process holds (see leases.py) is deferred and retried
after later saves and at `close()`; if it is still held then, it stays on disk until a
later run deletes it.
"""

from __future__ import annotations

import logging
import queue
import threading

from jaxpoint.core.checkpointers.background_failure import BackgroundFailure
from jaxpoint.core.errors import CheckpointError
from jaxpoint.core.manager import leases
from jaxpoint.core.storage import Location, commit_protocol_for

logger = logging.getLogger(__name__)

_STOP = None


class StepDeleter:
    """Deletes step folders under `root`; only the primary process constructs an active one.

    Call sequence (manager): `delete(steps)` after each commit, `retry_deferred()` after
    that, `wait_until_finished()` when results must be visible, `close()` at the end.
    """

    def __init__(self, root: Location, *, todelete_subdir: str | None, background: bool,
                 is_active: bool) -> None:
        self._root = root
        self._todelete_subdir = todelete_subdir
        self._is_active = is_active
        self._lock = threading.Lock()
        self._deferred: dict[int, str] = {}
        self._queued: dict[int, str] = {}
        self._failure = BackgroundFailure()
        self._queue: queue.Queue[tuple[int, str] | None] | None = None
        self._worker: threading.Thread | None = None
        if background and is_active:
            self._queue = queue.Queue()
            self._worker = threading.Thread(target=self._work, daemon=True,
                                            name=f"jaxpoint-delete:{root.name}")
            self._worker.start()

    def pending_steps(self) -> set[int]:
        """Steps decided for deletion that are still on disk (queued or held by a reader)."""
        with self._lock:
            return set(self._deferred) | set(self._queued)

    def delete(self, steps: dict[int, str]) -> None:
        """Deletes `steps` (step -> folder name), now or in the background thread."""
        if not self._is_active:
            return
        for step, name in sorted(steps.items()):
            if self._queue is None:
                self._delete_one(step, name)
            else:
                with self._lock:
                    self._queued[step] = name
                self._queue.put((step, name))

    def retry_deferred(self) -> None:
        """Tries again to delete the steps readers held last time."""
        with self._lock:
            deferred, self._deferred = dict(self._deferred), {}
        self.delete(deferred)

    def _delete_one(self, step: int, name: str) -> None:
        if not leases.begin_deletion(self._root, name):
            with self._lock:
                self._deferred[step] = name
            return
        try:
            self._remove(name)
        finally:
            leases.end_deletion(self._root, name)
        logger.info("Deleted step %d (%s) under %s", step, name, self._root)

    def _remove(self, name: str) -> None:
        parking = None if self._todelete_subdir is None else self._root / self._todelete_subdir
        commit_protocol_for(self._root).uncommit(self._root / name, park_in=parking)

    def _work(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not _STOP:
            step, name = item
            try:
                self._delete_one(step, name)
            except BaseException as error:  # kept for the manager's next call
                logger.error("Background deletion of step %d under %s failed: %s", step,
                             self._root, error)
                self._failure.store(CheckpointError(
                    f"Deleting step {step} under {self._root} in the background failed: "
                    f"{type(error).__name__}: {error}. The step may be left on disk. To fix, "
                    "check the storage's permissions, then delete it with "
                    "manager.delete(step)."), cause=error)
            finally:
                with self._lock:
                    self._queued.pop(step, None)
                self._queue.task_done()
        self._queue.task_done()

    def check_for_errors(self) -> None:
        """Raises the failure of a background deletion, once."""
        self._failure.raise_once()

    def wait_until_finished(self) -> None:
        """Blocks until every queued deletion has run; raises a background failure."""
        if self._queue is not None:
            self._queue.join()
        self.check_for_errors()

    def close(self) -> None:
        """Retries deferred steps once, finishes queued deletions and stops the thread."""
        self.retry_deferred()
        if self._queue is not None and self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join()
            self._queue = None
        with self._lock:
            left = sorted(self._deferred)
        if left:
            logger.info("Steps %s under %s are still being read by other processes; they stay "
                        "on disk until a later run deletes them.", left, self._root)
        self.check_for_errors()
