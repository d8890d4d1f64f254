"""A process fails or dies in the middle of a save: every process fails fast, nothing commits.

Through a CheckpointManager, process 1's user handler raises while writing step 5 (every
process must raise ProcessFailureError naming it), then ends process 1 (like a kill -9)
while writing step 6: the others must raise BarrierTimeoutError naming it within the
barrier timeout (far below JAX's heartbeat timeout). Neither the manager nor the
directory may show step 5 or 6.
"""

from __future__ import annotations

import pytest
from core.multiprocess import crash_handler, workloads
from core.multiprocess.checks import Launch, reraise
from jaxpoint.core.errors import BarrierTimeoutError, ProcessFailureError, StepNotFoundError
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.testing.multiprocess import ProcessStatus

_CRASHED = 1
# The coordination service checks barrier deadlines once a second; the rest is for a busy CI.
_SLACK_S = 4.0


def test_the_crashed_process_died_mid_save(launch: Launch) -> None:
    crashed = launch.outcomes[_CRASHED]
    assert crashed.status is ProcessStatus.DIED
    assert crashed.exit_code == crash_handler.CRASH_EXIT_CODE
    assert "crash_save" not in launch.reports[_CRASHED]


def test_survivors_raise_barrier_timeout_naming_the_crashed_process(launch: Launch) -> None:
    survivors = [r for r in launch.reports if r["process"] != _CRASHED]
    assert survivors
    for report in survivors:
        with pytest.raises(
            BarrierTimeoutError,
            match=rf"agreement 'jaxpoint-save/written' .* on process {report['process']}: .*"
            rf"process\(es\) \[{_CRASHED}\] never arrived",
        ):
            reraise(report["crash_save"])
        assert report["crash_save_s"] < workloads.BARRIER_TIMEOUT_S + _SLACK_S


def test_a_failed_write_fails_every_process_and_is_discarded(launch: Launch) -> None:
    for report in launch.reports:
        with pytest.raises(
            ProcessFailureError,
            match=rf"process\(es\) \[{_CRASHED}\] failed \(process {_CRASHED}: OSError: disk "
            rf"full on process {_CRASHED}\)\. Process {report['process']} raises this too",
        ):
            reraise(report["failed_save"])
        assert report["failed_save_s"] < workloads.BARRIER_TIMEOUT_S + _SLACK_S
    # Every process agreed that the save failed, so the primary removed its work folder.
    assert launch.reports[0]["failed_work_folders"] == []


def test_nothing_of_the_failed_steps_is_committed(launch: Launch) -> None:
    for report in launch.reports:
        if report["process"] != _CRASHED:
            assert report["crash_steps_after"] == [4]
    directory = launch.root / "crash"
    assert not (directory / "5").exists() and not (directory / "6").exists()
    options = CheckpointManagerOptions(read_only=True)
    with CheckpointManager(directory, options=options) as manager:
        assert manager.all_steps() == [4]
        for step in (5, 6):
            with pytest.raises(StepNotFoundError,
                               match=rf"Expected step {step} in .* found only steps \[4\]"):
                manager.restore(step)
