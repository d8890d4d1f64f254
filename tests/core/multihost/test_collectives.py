"""Barriers, broadcasts, agreement and the preemption sync point across 2 and 4 processes.

Each process count is one launch: `_collectives_target` runs every check in order on every
process and returns what it saw; the tests below assert on those reports.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
import pytest
from core.multihost.captured import capture, reraise
from jaxpoint.core.errors import (
    BarrierTimeoutError,
    InvalidArgumentError,
    ProcessFailureError,
)
from jaxpoint.core.multihost import (
    agree_on_success,
    broadcast_one_to_all,
    broadcast_one_to_some,
    install_preemption_handler,
    is_primary_host,
    process_count,
    process_index,
    reached_preemption,
    sync_global_processes,
)
from jaxpoint.core.multihost.runtime import distributed_runtime
from jaxpoint.core.testing.multiprocess import run_processes

_TIMEOUT_S = 30.0
_SHORT_TIMEOUT_S = 1.5
_LOOP_CALLS = 20
_SIGNAL_STEP = 3


def _barrier_loop(name: str) -> int:
    for _ in range(_LOOP_CALLS):
        sync_global_processes(name, timeout_s=_TIMEOUT_S)
    return _LOOP_CALLS


def _leftover_keys(*, ignoring: tuple[str, ...]) -> list[str]:
    """jaxpoint's keys in the coordination service, except those of the barriers `ignoring`."""
    runtime = distributed_runtime()
    assert runtime is not None
    ignored = tuple(f"jaxpoint/barrier/{name}/" for name in ignoring)
    keys = [key for key, _ in runtime.client.key_value_dir_get("jaxpoint/")]
    return sorted(key for key in keys if not key.startswith(ignored))


def _collectives_target(token: str) -> dict[str, Any]:
    me, n = process_index(), process_count()
    last = n - 1
    report: dict[str, Any] = {
        "index": me,
        "count": n,
        "token": token,
        "devices": (jax.local_device_count(), jax.device_count()),
        "is_primary_0": is_primary_host(0),
        "is_primary_none": is_primary_host(None),
    }
    started = time.monotonic()
    sync_global_processes("everyone", timeout_s=_TIMEOUT_S)
    report["barrier_s"] = time.monotonic() - started

    report["loop_calls"] = _barrier_loop("loop")
    with ThreadPoolExecutor(2) as pool:  # two managers with barriers in flight at once
        report["concurrent_calls"] = list(pool.map(_barrier_loop, ["manager_a", "manager_b"]))
    same_parity = [p for p in range(n) if p % 2 == me % 2]
    for _ in range(3):  # disjoint subsets share a name without meeting each other
        sync_global_processes("half", processes=same_parity, timeout_s=_TIMEOUT_S)
    sync_global_processes("spelling", processes=None if me == 0 else range(n), timeout_s=_TIMEOUT_S)
    report["not_member_error"] = capture(
        lambda: sync_global_processes("outsider", processes=[p for p in range(n) if p != me])
    )

    report["broadcast_all"] = broadcast_one_to_all(
        {"weights": np.arange(4, dtype=np.float32) + 100 * me, "step": np.int32(7 + me)}
    )
    receivers = list(range(1, n))
    if me in receivers:
        report["broadcast_some"] = broadcast_one_to_some(
            {"step": 42, "from": me, "pair": (1, 2)}, is_source=me == last, processes=receivers
        )
    report["broadcast_loop"] = [
        broadcast_one_to_some(10 * i + me, is_source=me == 0, processes=None, name="loop")
        for i in range(5)
    ]

    agree_on_success(True, name="save/write")
    failure = ValueError(f"disk full on process {me}") if me == last else True
    report["agreement_error"] = capture(lambda: agree_on_success(failure, name="save/write"))

    # Around the check, processes may still be deleting or already adding arrivals.
    sync_global_processes("before_cleanup_check", timeout_s=_TIMEOUT_S)
    report["keys_after_successes"] = _leftover_keys(
        ignoring=("before_cleanup_check", "after_cleanup_check")
    )
    sync_global_processes("after_cleanup_check", timeout_s=_TIMEOUT_S)

    # Failure paths last: they leave the keys of failed calls behind on purpose.
    if me != last:
        started = time.monotonic()
        report["timeout_error"] = capture(
            lambda: sync_global_processes("late", timeout_s=_SHORT_TIMEOUT_S)
        )
        report["timeout_s"] = time.monotonic() - started
    sync_global_processes("after_timeout", timeout_s=_TIMEOUT_S)
    if me == last:  # arrives only after the others gave up on "late"
        report["late_error"] = capture(lambda: sync_global_processes("late", timeout_s=_TIMEOUT_S))
    report["no_source_error"] = capture(
        lambda: broadcast_one_to_some(None, is_source=False, processes=None,
                                      timeout_s=_SHORT_TIMEOUT_S, name="nobody")
    )
    if me in (0, 1):
        report["two_sources"] = capture(
            lambda: broadcast_one_to_some(me, is_source=True, processes=[0, 1], name="two")
        )
    sync_global_processes("done", timeout_s=_TIMEOUT_S)
    report.update(_preemption_steps())
    return report


def _preemption_steps() -> dict[str, Any]:
    """Steps a training loop until JAX's sync point after the last process gets SIGTERM."""
    last = process_count() - 1
    handler_before = signal.getsignal(signal.SIGTERM)
    install_preemption_handler()  # must leave JAX's own SIGTERM handler in place
    report = {"kept_jax_handler": signal.getsignal(signal.SIGTERM) == handler_before}
    deadline = time.monotonic() + _TIMEOUT_S
    step = 0
    while time.monotonic() < deadline:
        if process_index() == last and step == _SIGNAL_STEP:
            os.kill(os.getpid(), signal.SIGTERM)
        if reached_preemption(step):
            report["preemption_step"] = step
            break
        sync_global_processes("train_step", timeout_s=_TIMEOUT_S)
        step += 1
    return report


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"{n}_processes")
def reports(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return run_processes(
        _collectives_target,
        num_processes=request.param,
        devices_per_process=2,
        timeout_s=90,
        args=("token",),
    )


def test_processes_join_with_their_roles_and_devices(reports: list[dict[str, Any]]) -> None:
    n = len(reports)
    assert [r["index"] for r in reports] == list(range(n))
    assert {r["count"] for r in reports} == {n}
    assert {r["token"] for r in reports} == {"token"}
    assert {r["devices"] for r in reports} == {(2, 2 * n)}
    assert [r["is_primary_0"] for r in reports] == [True] + [False] * (n - 1)
    assert all(r["is_primary_none"] for r in reports)


def test_barrier_passes_when_everyone_arrives(reports: list[dict[str, Any]]) -> None:
    assert all(r["barrier_s"] < _TIMEOUT_S for r in reports)


def test_barrier_name_is_reusable_in_loops_and_threads(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        assert report["loop_calls"] == _LOOP_CALLS
        assert report["concurrent_calls"] == [_LOOP_CALLS, _LOOP_CALLS]


def test_barrier_outside_its_process_subset_is_refused(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        me = report["index"]
        with pytest.raises(
            InvalidArgumentError, match=rf"only members of .* but process {me} called it"
        ):
            reraise(report["not_member_error"])


def test_barrier_timeout_names_the_missing_process(reports: list[dict[str, Any]]) -> None:
    last = len(reports) - 1
    for report in reports[:-1]:
        with pytest.raises(
            BarrierTimeoutError,
            match=rf"barrier 'late' .* on process {report['index']}: .*"
            rf"process\(es\) \[{last}\] never arrived",
        ):
            reraise(report["timeout_error"])
        # The coordination service checks deadlines once a second; the rest is for a busy CI.
        assert _SHORT_TIMEOUT_S - 0.1 <= report["timeout_s"] < _SHORT_TIMEOUT_S + 3.0


def test_late_arrival_at_a_failed_barrier_raises_at_once(reports: list[dict[str, Any]]) -> None:
    last = len(reports) - 1
    with pytest.raises(
        BarrierTimeoutError, match=rf"already failed when process {last} arrived"
    ):
        reraise(reports[-1]["late_error"])


def test_broadcast_one_to_all_sends_process_0s_arrays(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        received = report["broadcast_all"]
        np.testing.assert_array_equal(received["weights"], np.arange(4, dtype=np.float32))
        assert received["weights"].dtype == np.float32
        assert int(received["step"]) == 7


def test_broadcast_one_to_some_reaches_only_the_subset(reports: list[dict[str, Any]]) -> None:
    last = len(reports) - 1
    assert "broadcast_some" not in reports[0]
    for report in reports[1:]:
        assert report["broadcast_some"] == {"step": 42, "from": last, "pair": [1, 2]}
    for report in reports:
        assert report["broadcast_loop"] == [0, 10, 20, 30, 40]


def test_broadcast_without_a_source_times_out(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        with pytest.raises(
            BarrierTimeoutError, match=r"broadcast 'nobody' .* pass is_source=True .* none did"
        ):
            reraise(report["no_source_error"])


def test_broadcast_with_two_sources_is_refused(reports: list[dict[str, Any]]) -> None:
    outcomes = [reports[0]["two_sources"], reports[1]["two_sources"]]
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1, outcomes
    with pytest.raises(InvalidArgumentError, match=r"Expected exactly one source for broadcast"):
        reraise(errors[0])


def test_agreement_raises_everywhere_naming_the_failed_process(
    reports: list[dict[str, Any]],
) -> None:
    last = len(reports) - 1
    for report in reports:
        with pytest.raises(
            ProcessFailureError,
            match=rf"process\(es\) \[{last}\] failed \(process {last}: ValueError: disk full "
            rf"on process {last}\)\. Process {report['index']} raises this too",
        ) as caught:
            reraise(report["agreement_error"])
        assert caught.value.failures == {last: f"ValueError: disk full on process {last}"}


def test_successful_collectives_leave_no_keys_behind(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        assert report["keys_after_successes"] == []


def test_processes_reach_the_preemption_sync_point_at_the_same_step(
    reports: list[dict[str, Any]],
) -> None:
    steps = {report.get("preemption_step") for report in reports}
    assert len(steps) == 1, [report.get("preemption_step") for report in reports]
    (step,) = steps
    assert step is not None and step > _SIGNAL_STEP
    assert all(report["kept_jax_handler"] for report in reports)
