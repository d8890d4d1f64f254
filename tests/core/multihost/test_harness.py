"""The multi-process harness: outcomes, failure reports, crashed peers, stragglers.

The crashed-peer case is what fault tests build on (kill a process mid-save): the
survivors raise `BarrierTimeoutError` naming it, before JAX's heartbeat timeout stops them.
"""

from __future__ import annotations

import logging
import pickle
import time
from typing import Any

import pytest
from jaxpoint.core.errors import BarrierTimeoutError, InvalidArgumentError, ProcessRunError
from jaxpoint.core.multihost import sync_global_processes
from jaxpoint.core.testing.multiprocess import (
    ProcessOutcome,
    ProcessStatus,
    crash_process,
    returned_values,
    run_process_id,
    run_processes,
    run_processes_with_outcomes,
)

logger = logging.getLogger(__name__)

_CRASH_EXIT_CODE = 7
_BARRIER_TIMEOUT_S = 2.0
_STRAGGLER_TIMEOUT_S = 3.0


def _mixed_target(token: str) -> Any:
    """Process 1 crashes before a barrier with process 0, which must time out naming it."""
    me = run_process_id()
    if me == 0:
        sync_global_processes("save/write_done", processes=[0, 1], timeout_s=_BARRIER_TIMEOUT_S)
    if me == 1:
        logger.warning("process 1 crashes now")
        crash_process(_CRASH_EXIT_CODE)
    if me == 2:
        return {"process": me, "token": token}
    return lambda: None  # a return value that cannot be pickled


def _straggler_target() -> None:
    time.sleep(600)


@pytest.fixture(scope="module")
def mixed() -> list[ProcessOutcome]:
    return run_processes_with_outcomes(
        _mixed_target, num_processes=4, devices_per_process=1, timeout_s=120, args=("token",)
    )


def test_outcomes_tell_returned_raised_and_died(
    mixed: list[ProcessOutcome],
) -> None:
    outcomes = mixed
    assert [o.process_id for o in outcomes] == [0, 1, 2, 3]
    assert [o.status for o in outcomes] == [
        ProcessStatus.RAISED,
        ProcessStatus.DIED,
        ProcessStatus.RETURNED,
        ProcessStatus.RAISED,
    ]
    assert outcomes[2].value == {"process": 2, "token": "token"}
    assert outcomes[1].exit_code == _CRASH_EXIT_CODE
    assert "process 1 crashes now" in outcomes[1].output


def test_crashed_peer_makes_survivors_time_out_naming_it(
    mixed: list[ProcessOutcome],
) -> None:
    survivor = mixed[0]
    assert survivor.error_type == "jaxpoint.core.errors.BarrierTimeoutError"
    assert "in _mixed_target\n    sync_global_processes(" in survivor.traceback
    with pytest.raises(
        BarrierTimeoutError,
        match=r"barrier 'save/write_done' .* on process 0: .*process\(es\) \[1\] never arrived\. "
        r"To fix, check the logs of process\(es\) \[1\]",
    ):
        raise survivor.error  # type: ignore[misc]


def test_unpicklable_return_value_is_reported_as_raised(
    mixed: list[ProcessOutcome],
) -> None:
    outcome = mixed[3]
    assert "Can't pickle local object" in outcome.traceback
    assert "pickle.dumps(target(*args))" in outcome.traceback


def test_returned_values_report_every_failure(mixed: list[ProcessOutcome]) -> None:
    outcomes = mixed
    with pytest.raises(
        ProcessRunError,
        match=r"(?s)Expected all 4 processes to return, but 3 did not:\n"
        r"  process 0 raised jaxpoint\.core\.errors\.BarrierTimeoutError: "
        r"barrier 'save/write_done'.*\n"
        r"  process 1 died with exit code 7\n"
        r"  process 3 raised .*Can't pickle.*"
        r"--- process 0 \(raised\) ---\nTraceback .*in _mixed_target"
        r".*--- process 1 \(died\) ---\nlast output:\n.*process 1 crashes now",
    ) as caught:
        returned_values(outcomes)
    assert caught.value.outcomes == tuple(outcomes)
    assert returned_values([outcomes[2]]) == [{"process": 2, "token": "token"}]


def test_straggler_is_killed_at_the_deadline() -> None:
    started = time.monotonic()
    (outcome,) = run_processes_with_outcomes(
        _straggler_target,
        num_processes=1,
        devices_per_process=1,
        timeout_s=_STRAGGLER_TIMEOUT_S,
        initialize_distributed=False,
    )
    elapsed_s = time.monotonic() - started
    assert outcome.status is ProcessStatus.TIMED_OUT and outcome.exit_code == -9
    assert _STRAGGLER_TIMEOUT_S <= elapsed_s < _STRAGGLER_TIMEOUT_S + 3
    with pytest.raises(ProcessRunError, match=r"1 did not:\n  process 0 timed out and was killed"):
        returned_values([outcome])


def _nested_target_factory() -> Any:
    def nested() -> None:
        return None

    return nested


@pytest.mark.parametrize(
    "target", [lambda: None, _nested_target_factory()], ids=["lambda", "nested"]
)
def test_targets_children_cannot_import_are_refused(target: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=r"module-level function that child processes"):
        run_processes(target, num_processes=1, devices_per_process=1, timeout_s=10)


def test_unpicklable_args_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"picklable args for run_processes"):
        run_processes(
            _mixed_target, num_processes=1, devices_per_process=1, timeout_s=10,
            args=(lambda: None,),
        )


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_processes": 0}, r"num_processes for run_processes to be an int >= 1"),
        ({"devices_per_process": 1.5}, r"devices_per_process for run_processes to be an int >= 1"),
        ({"timeout_s": 0}, r"timeout_s > 0 seconds"),
        ({"heartbeat_timeout_s": 0}, r"heartbeat_timeout_s for run_processes to be an int >= 1"),
    ],
)
def test_invalid_run_options_are_refused(options: dict[str, Any], match: str) -> None:
    arguments = {"num_processes": 1, "devices_per_process": 1, "timeout_s": 10} | options
    with pytest.raises(InvalidArgumentError, match=match):
        run_processes(_mixed_target, **arguments)


def test_run_process_id_outside_a_child_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"inside a process started by run_processes"):
        run_process_id()


def test_errors_survive_pickling_with_their_details() -> None:
    error = ProcessRunError("message", outcomes=(1, 2))
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == "message" and copy.outcomes == (1, 2)
