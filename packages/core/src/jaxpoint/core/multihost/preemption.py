"""Noticing preemption (SIGTERM) in time to save a checkpoint.

With several processes this is JAX's preemption sync point: when any process receives
SIGTERM, JAX's preemption service (enabled by default, `jax_enable_preemption_service`,
started by `jax.distributed.initialize`, working on CPU too) agrees in the background on
the next safe step, and `reached_preemption(step)` is True on every process at that same
step. JAX installs its own SIGTERM handler for this, so jaxpoint installs none then.

With one process (no `jax.distributed`), JAX has no such service; jaxpoint installs a
Python SIGTERM handler on first use instead, and `reached_preemption` stays True from the
first check after the signal. The handler keeps the process alive so that it can save, and
calls any Python handler that was installed before it.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from jax.experimental import multihost_utils
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.multihost.runtime import distributed_runtime

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_received = threading.Event()
_installed = False
_previous_handler: Any = None


def reached_preemption(step: int) -> bool:
    """Whether the job should save at `step` because it is being preempted.

    Collective: every process calls this, in the same order. Call it at every step with
    the same step numbers on every process. Raises `InvalidArgumentError` when several
    processes run with JAX's preemption service disabled.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidArgumentError(
            f"Expected step to be an int >= 0 for reached_preemption, got {step!r}. To fix, "
            "pass the training step you are about to finish."
        )
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


def install_preemption_handler() -> None:
    """Starts listening for SIGTERM in a single process; idempotent.

    `reached_preemption` calls this on first use; call it yourself from the main thread
    at start-up when the training loop runs in another thread (Python only lets the main
    thread install signal handlers). Does nothing under `jax.distributed`, whose own
    handler must not be replaced.
    """
    global _installed, _previous_handler
    if distributed_runtime() is not None:
        return
    with _lock:
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


def reset_preemption_handler() -> None:
    """Forgets a received SIGTERM and restores the handler found at installation (tests)."""
    global _installed, _previous_handler
    with _lock:
        if _installed:
            # None means the previous handler was not set from Python; SIG_DFL is the best guess.
            previous = signal.SIG_DFL if _previous_handler is None else _previous_handler
            signal.signal(signal.SIGTERM, previous)
        _installed = False
        _previous_handler = None
        _received.clear()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _received.set()
    logger.warning("SIGTERM received: reached_preemption() now returns True")
    if callable(_previous_handler):
        _previous_handler(signum, frame)
