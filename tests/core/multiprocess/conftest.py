"""The two launches every multi-process test reads: 2 processes x 4 devices, then 4 x 2.

Each launch runs all of its checks (see workloads.py) and is shared by the test modules
of this package, so the whole package starts JAX processes only twice. The 4-process
launch also restores what the 2-process launch saved, so it runs second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from core.multiprocess import workloads
from core.multiprocess.checks import Launch
from jaxpoint.core.testing.multiprocess import ProcessStatus, run_processes_with_outcomes

RUN_TIMEOUT_S = 240


def _launch(root: Path, target: Any, *, num_processes: int, devices_per_process: int,
            args: tuple[Any, ...]) -> Launch:
    outcomes = run_processes_with_outcomes(
        target, num_processes=num_processes, devices_per_process=devices_per_process,
        timeout_s=RUN_TIMEOUT_S, args=args)
    reports = []
    for outcome in outcomes:
        if outcome.status is ProcessStatus.RETURNED:
            reports.append(outcome.value)
        elif outcome.status is ProcessStatus.DIED and (
                root / f"report-{outcome.process_id}.pkl").exists():  # killed on purpose, last
            reports.append(workloads.load_report(root, outcome.process_id))
        else:
            pytest.fail(f"{outcome.describe()}:\n{outcome.traceback or outcome.output}")
    return Launch(root=root, outcomes=outcomes, reports=reports)


@pytest.fixture(scope="package")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Launch:
    root = tmp_path_factory.mktemp("two-processes")
    return _launch(root, workloads.two_process_workload, num_processes=2,
                   devices_per_process=4, args=(str(root),))


@pytest.fixture(scope="package")
def four_processes(tmp_path_factory: pytest.TempPathFactory, two_processes: Launch) -> Launch:
    root = tmp_path_factory.mktemp("four-processes")
    return _launch(root, workloads.four_process_workload, num_processes=4,
                   devices_per_process=2, args=(str(root), str(two_processes.root)))


@pytest.fixture(params=["two", "four"], ids=["2_processes", "4_processes"])
def launch(request: pytest.FixtureRequest) -> Launch:
    """Each test using it runs once on each launch."""
    return request.getfixturevalue(f"{request.param}_processes")
