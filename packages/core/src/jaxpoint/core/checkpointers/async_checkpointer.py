"""AsyncCheckpointer: `save()` returns once the state is staged; the write runs behind.

Staging makes host copies of everything the caller could still change (donated or
mutated arrays), so what is written is what `save()` was given. A background failure
is kept and raised by the next `save`, `wait_until_finished`, `check_for_errors` or
`close` — never only logged.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from jaxpoint.core.checkpointers.checkpointer import Checkpointer, PathLike
from jaxpoint.core.checkpointers.options import AsyncOptions, MultiprocessingOptions
from jaxpoint.core.checkpointers.save_pipeline import SaveJob, finish_save
from jaxpoint.core.errors import BackgroundSaveError, CheckpointError

logger = logging.getLogger(__name__)


class AsyncCheckpointer(Checkpointer):
    """A Checkpointer whose writes run in one background thread, one save at a time."""

    def __init__(self, handler: Any, *, timeout_secs: float | None = None,
                 multiprocessing_options: MultiprocessingOptions | None = None,
                 async_options: AsyncOptions | None = None) -> None:
        super().__init__(handler, multiprocessing_options=multiprocessing_options)
        options = async_options or AsyncOptions()
        self._timeout_s = timeout_secs if timeout_secs is not None else options.timeout_secs
        self._on_commit = options.post_finalization_callback
        self._thread: threading.Thread | None = None
        self._failure: tuple[str, BaseException] | None = None
        self._lock = threading.Lock()

    def save(self, directory: PathLike, *legacy_args: Any, args: Any = None, force: bool = False,
             custom_metadata: dict[str, Any] | None = None,
             metrics: dict[str, Any] | None = None, **legacy_kwargs: Any) -> None:
        """Collective: every process calls this, in the same order. Returns once staged."""
        self.wait_until_finished()
        job = self._begin(directory, args, force=force, is_async=True,
                          custom_metadata=custom_metadata, metrics=metrics,
                          legacy=(legacy_args, legacy_kwargs))
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
            self._thread = thread
        thread.start()

    def _finish(self, job: SaveJob) -> None:
        try:
            finish_save(job)
            if callable(self._on_commit):
                self._on_commit()
        except BaseException as error:  # kept for the caller's next call
            logger.error("Background save to %s failed: %s", job.final, error)
            with self._lock:
                self._failure = (str(job.final), error)

    def is_saving_in_progress(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def check_for_errors(self) -> None:
        """Raises the failure of a finished background save, once."""
        with self._lock:
            failure, self._failure = self._failure, None
        if failure is not None:
            path, error = failure
            raise BackgroundSaveError(
                f"The asynchronous save to {path} failed: {type(error).__name__}: {error}. "
                "Nothing was committed there; earlier checkpoints are intact."
            ) from error

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
        self.wait_until_finished()
