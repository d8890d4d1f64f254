"""AsyncCheckpointer: `save()` returns once the state is staged; the write runs behind.

Staging makes host copies of everything the caller could still change (donated or
mutated arrays), so what is written is what `save()` was given. A background failure
is kept and raised by the next `save`, `wait_until_finished`, `check_for_errors` or
`close` — never only logged.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from jaxpoint.core.checkpointers import exit_guard
from jaxpoint.core.checkpointers.background_failure import BackgroundFailure
from jaxpoint.core.checkpointers.checkpointer import Checkpointer, PathLike
from jaxpoint.core.checkpointers.options import AsyncOptions, MultiprocessingOptions
from jaxpoint.core.checkpointers.save_pipeline import SaveJob, finish_save
from jaxpoint.core.errors import BackgroundSaveError, CheckpointError, SaveAbandonedError
from jaxpoint.core.storage import StorageOptions

logger = logging.getLogger(__name__)


class AsyncCheckpointer(Checkpointer):
    """A Checkpointer whose writes run in one background thread, one save at a time.

    At interpreter exit a save still in flight finishes and commits (see exit_guard).
    """

    def __init__(self, handler: Any, *, timeout_secs: float | None = None,
                 multiprocessing_options: MultiprocessingOptions | None = None,
                 async_options: AsyncOptions | None = None,
                 storage_options: StorageOptions | None = None) -> None:
        super().__init__(handler, multiprocessing_options=multiprocessing_options,
                         storage_options=storage_options)
        options = async_options or AsyncOptions()
        self._timeout_s = timeout_secs if timeout_secs is not None else options.timeout_secs
        self._on_commit = options.post_finalization_callback
        self._thread: threading.Thread | None = None
        self._job: SaveJob | None = None
        self._failure = BackgroundFailure()
        self._lock = threading.Lock()
        exit_guard.guard(self)

    def save(self, directory: PathLike, *legacy_args: Any, args: Any = None, force: bool = False,
             custom_metadata: dict[str, Any] | None = None,
             metrics: dict[str, Any] | None = None, step: int | None = None,
             **legacy_kwargs: Any) -> None:
        """Collective: every process calls this, in the same order. Returns once staged."""
        self.wait_until_finished()
        job = self._begin(directory, args, force=force, is_async=True,
                          custom_metadata=custom_metadata, metrics=metrics, step=step,
                          legacy=(legacy_args, legacy_kwargs))
        job.blocked_s = time.perf_counter() - job.started_s
        self.start_background(job)

    @property
    def async_options(self) -> AsyncOptions:
        """The timeout and commit callback the background writes run with."""
        return AsyncOptions(timeout_secs=self._timeout_s,
                            post_finalization_callback=self._on_commit)

    def start_background(self, job: SaveJob) -> None:
        """Runs the rest of `job` in the background thread."""
        thread = threading.Thread(target=self._finish, args=(job,), daemon=True,
                                  name=f"jaxpoint-save:{job.final.name}")
        with self._lock:
            self._thread, self._job = thread, job
        exit_guard.guard(self)  # again: close() ends the guard, a later save renews it
        thread.start()

    def _finish(self, job: SaveJob) -> None:
        try:
            finish_save(job)
            if callable(self._on_commit):
                self._on_commit()
        except BaseException as error:  # kept for the caller's next call
            logger.error("Background save to %s failed: %s", job.final, error)
            self._failure.store(BackgroundSaveError(
                f"The asynchronous save to {job.final} failed: {type(error).__name__}: "
                f"{error}. Nothing was committed there; earlier checkpoints are intact."),
                cause=error)

    def is_saving_in_progress(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def pending_save(self) -> str | None:
        """The save in flight, for logs ("step 10 (/ckpt/10)"), or None."""
        job = self._job
        return job.label if job is not None and self.is_saving_in_progress() else None

    def abandon_pending_save(self) -> None:
        """Makes the save in flight stop before its commit; it stays uncommitted."""
        job = self._job
        if job is not None:
            job.abandoned.set()

    def check_for_errors(self) -> None:
        """Raises the failure of a finished background save, once."""
        self._failure.raise_once()

    def wait_until_finished(self) -> None:
        """Blocks until the background save is committed; raises if it failed."""
        thread = self._thread
        if thread is not None:
            thread.join(self._timeout_s)
            if thread.is_alive():
                raise CheckpointError(
                    f"The background save did not finish within timeout_secs={self._timeout_s}. "
                    "To fix, raise the timeout or check the storage and the other processes."
                )
        self.check_for_errors()

    def close(self) -> None:
        """Waits for the save in flight; a save abandoned by a second Ctrl-C is not an error."""
        exit_guard.unguard(self)
        try:
            self.wait_until_finished()
        except BackgroundSaveError as error:
            if not isinstance(error.__cause__, SaveAbandonedError):
                raise
