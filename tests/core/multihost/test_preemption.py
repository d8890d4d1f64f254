"""Preemption notices (SIGTERM) in a single process, and JAX's preemption service missing.

SIGTERM only ever goes to child processes started here, never to the pytest process. The
multi-process sync point is checked with the other collectives, in test_collectives.py.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from core.multihost.captured import capture, reraise
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.multihost import install_preemption_handler, reached_preemption
from jaxpoint.core.multihost.preemption import reset_preemption_handler
from jaxpoint.core.testing.multiprocess import run_processes

_GIVE_UP_S = 30.0


def _wait_until_preempted(step: int) -> bool:
    deadline = time.monotonic() + _GIVE_UP_S
    while not reached_preemption(step) and time.monotonic() < deadline:
        time.sleep(0.01)
    return reached_preemption(step)


def _single_process_target() -> dict[str, Any]:
    report: dict[str, Any] = {}
    chained: list[int] = []

    def previous(signum: int, frame: object) -> None:
        chained.append(signum)

    signal.signal(signal.SIGTERM, previous)
    report["before_signal"] = reached_preemption(0)
    os.kill(os.getpid(), signal.SIGTERM)
    report["at_signal"] = _wait_until_preempted(1)
    report["later_step"] = reached_preemption(2)
    report["chained"] = chained
    reset_preemption_handler()
    report["restored_previous"] = signal.getsignal(signal.SIGTERM) is previous
    report["after_reset"] = reached_preemption(3)

    # A default (terminating) previous handler is not chained: the process must live to save.
    reset_preemption_handler()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    install_preemption_handler()
    os.kill(os.getpid(), signal.SIGTERM)
    report["survived_default_handler"] = _wait_until_preempted(4)

    reset_preemption_handler()
    with ThreadPoolExecutor(1) as pool:
        report["thread_error"] = pool.submit(capture, install_preemption_handler).result()
    return report


def test_single_process_sees_sigterm_from_the_first_check_after_it() -> None:
    (report,) = run_processes(
        _single_process_target,
        num_processes=1,
        devices_per_process=1,
        timeout_s=60,
        initialize_distributed=False,
    )
    assert report["before_signal"] is False
    assert report["at_signal"] is True
    assert report["later_step"] is True
    assert report["chained"] == [signal.SIGTERM]
    assert report["restored_previous"] is True
    assert report["after_reset"] is False
    assert report["survived_default_handler"] is True
    with pytest.raises(InvalidArgumentError, match=r"installed from the main thread, got thread"):
        reraise(report["thread_error"])


def _disabled_service_target() -> Any:
    return capture(lambda: reached_preemption(0))


def test_disabled_preemption_service_is_reported() -> None:
    (error,) = run_processes(
        _disabled_service_target,
        num_processes=1,
        devices_per_process=1,
        timeout_s=60,
        env={"JAX_ENABLE_PREEMPTION_SERVICE": "false"},
    )
    with pytest.raises(
        InvalidArgumentError,
        match=r"preemption service to run on process 0 of 1, but it is disabled",
    ):
        reraise(error)
