"""Noticing preemption (SIGTERM) in time to save a checkpoint, and still stopping after.

With several processes this is JAX's preemption sync point: when any process receives
SIGTERM, JAX's preemption service (enabled by default, `jax_enable_preemption_service`,
started by `jax.distributed.initialize`, working on CPU too) agrees in the background on
the next safe step, and `reached_preemption(step)` is True on every process at that same
step. JAX installs its own SIGTERM handler for this, so jaxpoint installs none then.

With one process (no `jax.distributed`), JAX has no such service; jaxpoint installs a
Python SIGTERM handler instead, and `reached_preemption` stays True from the first check
after the signal. The handler keeps the process alive so that it can save, and calls any
Python handler that was installed before it. A second SIGTERM runs the callbacks
registered with `on_second_sigterm` (the checkpointers finish or abandon their save in
flight) and then ends the process with the handler found at installation.

`PreemptionSource` is the seam the manager (and anything built on it) takes: the
module-level handler is the default, `default_preemption_source()`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol, runtime_checkable

from jax.experimental import multihost_utils
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.multihost.runtime import distributed_runtime
from jaxpoint.core.validation import require_int_at_least

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_received = threading.Event()
_installed = False
_pinned = False  # installed by an explicit call: stays until reset
_holders = 0  # managers relying on the handler; it is removed when the last one leaves
_previous_handler: Any = None
_second_sigterm_callbacks: list[Callable[[], None]] = []


@runtime_checkable
class PreemptionSource(Protocol):
    """Tells a training loop's checkpointing that the job is being preempted.

    Call order (the manager's): `hold()` once when it opens (main thread, single process
    only matters), `reached_preemption(step)` at the steps it considers,
    `stop_process()` when the loop ignored a preemption whose checkpoint has committed,
    `release()` once when it closes.
    """

    def hold(self) -> bool:
        """Starts listening; False when this thread cannot (the reason is logged once)."""
        ...

    def release(self) -> None:
        """Stops listening once no holder is left."""
        ...

    def reached_preemption(self, step: int) -> bool:
        """Collective: every process calls this, in the same order."""
        ...

    def stop_process(self) -> None:
        """Ends the process as the preemption signal would have without jaxpoint."""
        ...


class SigtermPreemption:
    """The default source: jaxpoint's SIGTERM handler, or JAX's sync point under
    `jax.distributed`."""

    def hold(self) -> bool:
        global _holders
        if distributed_runtime() is not None:
            return True
        try:
            install_preemption_handler(pinned=False)
        except InvalidArgumentError as error:
            logger.warning("SIGTERM will not trigger a preemption save: %s", error)
            return False
        with _lock:
            _holders += 1
        return True

    def release(self) -> None:
        global _holders
        if distributed_runtime() is not None:
            return
        with _lock:
            _holders = max(0, _holders - 1)
            if _holders == 0 and not _pinned:
                _uninstall()

    def reached_preemption(self, step: int) -> bool:
        _check_step(step)
        if distributed_runtime() is None:
            return _received.is_set()
        return reached_preemption(step)

    def stop_process(self) -> None:
        if distributed_runtime() is not None:
            # JAX's own handler owns SIGTERM there; every process reaches the same step
            # and is expected to stop by its loop. Nothing to re-raise.
            logger.warning("The loop went on after a preemption checkpoint under "
                           "jax.distributed; it is left to the job scheduler to stop it.")
            return
        _terminate_with_previous_handler()


_DEFAULT_SOURCE = SigtermPreemption()


def default_preemption_source() -> PreemptionSource:
    """The process-wide source a CheckpointManager uses unless it is given one."""
    return _DEFAULT_SOURCE


def _check_step(step: int) -> None:
    require_int_at_least(step, 0, what="the step passed to reached_preemption",
                         fix="pass the training step you are about to finish")


def reached_preemption(step: int) -> bool:
    """Whether the job should save at `step` because it is being preempted.

    Collective: every process calls this, in the same order. Call it at every step with
    the same step numbers on every process. A single process starts listening for SIGTERM
    on first use. Raises `InvalidArgumentError` when several processes run with JAX's
    preemption service disabled.
    """
    _check_step(step)
    runtime = distributed_runtime()
    if runtime is None:
        install_preemption_handler()
        return _received.is_set()
    try:
        return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError as error:
        raise InvalidArgumentError(
            f"Expected JAX's preemption service to run on process {runtime.process_id} of "
            f"{runtime.num_processes}, but it is disabled ({error}). To fix, leave "
            "jax_enable_preemption_service on (the default; also the "
            "JAX_ENABLE_PREEMPTION_SERVICE environment variable) before "
            "jax.distributed.initialize."
        ) from error


def install_preemption_handler(*, pinned: bool = True) -> None:
    """Starts listening for SIGTERM in a single process; idempotent.

    `reached_preemption` calls this on first use; call it yourself from the main thread
    at start-up when the training loop runs in another thread (Python only lets the main
    thread install signal handlers). Does nothing under `jax.distributed`, whose own
    handler must not be replaced. A handler installed by this call stays for the life of
    the process; one that only managers asked for goes when the last of them closes.
    """
    global _installed, _pinned, _previous_handler
    if distributed_runtime() is not None:
        return
    with _lock:
        _pinned = _pinned or pinned
        if _installed:
            return
        if threading.current_thread() is not threading.main_thread():
            raise InvalidArgumentError(
                "Expected the SIGTERM handler for reached_preemption to be installed from "
                f"the main thread, got thread {threading.current_thread().name!r}. To fix, "
                "call jaxpoint.core.multihost.install_preemption_handler() from the main "
                "thread before starting the training thread."
            )
        _previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
        _installed = True
    logger.debug("installed a SIGTERM handler for reached_preemption")


def on_second_sigterm(callback: Callable[[], None]) -> None:
    """Runs `callback` (in the main thread) when a second SIGTERM arrives, before the
    process ends. The checkpointers use it to finish or abandon the save in flight."""
    with _lock:
        if callback not in _second_sigterm_callbacks:
            _second_sigterm_callbacks.append(callback)


def _uninstall() -> None:
    global _installed, _previous_handler
    if _installed:
        # None means the previous handler was not set from Python; SIG_DFL is the best guess.
        previous = signal.SIG_DFL if _previous_handler is None else _previous_handler
        try:
            signal.signal(signal.SIGTERM, previous)
        except ValueError:  # not the main thread: the handler stays, inert once reset
            logger.debug("could not restore the SIGTERM handler outside the main thread")
    _installed = False
    _previous_handler = None
    _received.clear()


def reset_preemption_handler() -> None:
    """Forgets a received SIGTERM and every holder, and restores the handler found at
    installation (tests)."""
    global _pinned, _holders
    with _lock:
        _uninstall()
        _pinned = False
        _holders = 0


def _terminate_with_previous_handler() -> None:
    with _lock:
        previous = signal.SIG_DFL if _previous_handler is None else _previous_handler
        reset_preemption_handler()
        signal.signal(signal.SIGTERM, previous)
    logger.warning("Ending the process with SIGTERM, as without jaxpoint's handler.")
    signal.raise_signal(signal.SIGTERM)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _received.is_set():
        logger.warning("Second SIGTERM: finishing the checkpoint in flight, then exiting.")
        for callback in list(_second_sigterm_callbacks):
            try:
                callback()
            except Exception as error:  # the process must still end
                logger.error("Could not finish the checkpoint in flight: %s", error)
        _terminate_with_previous_handler()
        return
    _received.set()
    logger.warning("SIGTERM received: reached_preemption() now returns True")
    if callable(_previous_handler):
        _previous_handler(signum, frame)
