"""The emergency manager in real processes: preemption, resume, lost local folders.

Per set-up (2 processes x 2 devices: one process per replica; 4 x 2: two per replica), one
`train` launch runs until SIGTERM on process 1 makes every process stop at JAX's agreed
preemption step, then one `resume` launch restores copies of what it left: intact; one
process's local folder wiped; every local folder wiped. Resumed losses must equal an
uninterrupted run's, bit for bit, and the JSON item must come from the restored step.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from core.emergency import manager_processes as work
from jaxpoint.core.testing.multiprocess import (
    ProcessStatus,
    run_processes,
    run_processes_with_outcomes,
)

RUN_TIMEOUT_S = 120


def _copy(saved: Path, target: Path, *, wiped: tuple[int, ...]) -> str:
    shutil.copytree(saved, target)
    for process in wiped:
        shutil.rmtree(target / f"local-{process}")
    return str(target)


@pytest.fixture(scope="module", params=[2, 4], ids=["2_processes", "4_processes"])
def launch(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    processes = request.param
    root = tmp_path_factory.mktemp(f"emergency-{processes}")
    saved = root / "saved"
    devices_per_row = processes  # 2 x 2 or 2 x 4 devices: processes own whole rows
    trained = run_processes(work.train, num_processes=processes, devices_per_process=2,
                            timeout_s=RUN_TIMEOUT_S, args=(str(saved), devices_per_row))
    roots = {"intact": _copy(saved, root / "intact", wiped=()),
             "one_wiped": _copy(saved, root / "one-wiped", wiped=(1,)),
             "all_wiped": _copy(saved, root / "all-wiped", wiped=tuple(range(processes)))}
    resumed = run_processes(work.resume, num_processes=processes, devices_per_process=2,
                            timeout_s=RUN_TIMEOUT_S, args=(roots, devices_per_row))
    return {"processes": processes, "trained": trained, "resumed": resumed}


def test_sigterm_stops_every_process_at_one_step_with_a_local_checkpoint(launch):
    stopped = {report["stopped"] for report in launch["trained"]}
    assert len(stopped) == 1, f"processes stopped at different steps: {stopped}"
    step = stopped.pop()
    assert work.SIGTERM_AT <= step < work.LAST_STEP
    for report in launch["trained"]:
        assert report["local"][-1] == step  # written whatever the interval, and committed


@pytest.mark.parametrize("scenario", ["intact", "one_wiped"])
def test_resume_from_the_local_tier_is_bit_exact(launch, scenario):
    stopped = launch["trained"][0]["stopped"]
    for report in launch["resumed"]:
        result = report[scenario]
        assert result["step"] == stopped  # the item comes from the same step as the state
        expected = {step: report["reference"][step] for step in result["losses"]}
        assert result["losses"] == expected and len(expected) == work.RESUMED_STEPS


def test_every_local_folder_wiped_resumes_from_the_newest_persistent_step(launch):
    stopped = launch["trained"][0]["stopped"]
    newest_persistent = max(s for s in range(1, stopped + 1)
                            if s == 1 or s % work.PERSISTENT_INTERVAL == 0)
    for report in launch["resumed"]:
        result = report["all_wiped"]
        assert result["step"] == newest_persistent
        expected = {step: report["reference"][step] for step in result["losses"]}
        assert result["losses"] == expected


def test_a_second_sigterm_during_the_preemption_save_corrupts_nothing(tmp_path: Path):
    outcome, = run_processes_with_outcomes(work.preempt_twice, num_processes=1,
                                           devices_per_process=8, timeout_s=RUN_TIMEOUT_S,
                                           args=(str(tmp_path),), initialize_distributed=False)
    assert outcome.status is ProcessStatus.DIED and outcome.exit_code == -15, outcome.describe()
    restored, = run_processes(work.restore_one_process, num_processes=1, devices_per_process=8,
                              timeout_s=RUN_TIMEOUT_S, args=(str(tmp_path),),
                              initialize_distributed=False)
    # The preemption save either committed whole or is not listed; nothing half-written.
    assert restored["step"] in (2, 3) and restored["exact"]
    assert restored["local"] == [1, 2, 3][:restored["step"]][-3:]
