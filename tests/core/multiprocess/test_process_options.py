"""MultiprocessingOptions across real processes: subsets, primary_host=None, async saves.

Subsets: in the 2-process launch each process saves alone (active_processes=[i]); in the
4-process launch processes {0, 1} and {2, 3} save at the same time, each pair on its own
devices, with its own primary and barriers that never wait for the other pair.
"""

from __future__ import annotations

import jax
import pytest
from core.multiprocess import state, workloads
from core.multiprocess.checks import Launch, assert_restored
from jax.sharding import PartitionSpec as P
from jaxpoint.core.storage import Location, commit_protocol_for

_SPECS = {name: spec for name, (_, _, spec) in state.ARRAYS.items()}


def _subsets(launch: Launch) -> dict[str, list[int]]:
    if len(launch.reports) == 2:
        return {"0": [0], "1": [1]}
    return {"0-1": [0, 1], "2-3": [2, 3]}


def _is_committed(folder) -> bool:
    location = Location.parse(folder)
    return commit_protocol_for(location).is_committed(location)


def _step_folders(directory) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_process_subsets_save_and_restore_on_their_own_devices(launch: Launch) -> None:
    assert launch.check("subset_save") == [None] * len(launch.reports)
    assert_restored(launch.check("subset_restore"))
    for label, members in _subsets(launch).items():
        folder = launch.root / f"subset-{label}"
        assert _is_committed(folder), label
        written = sorted(p.name for p in folder.iterdir() if p.name.startswith("ocdbt.process_"))
        assert written == [f"ocdbt.process_{p}" for p in members], label


def test_manager_on_a_process_subset(launch: Launch) -> None:
    results = launch.check("subset_manager")
    assert_restored([r if isinstance(r, BaseException) else r["problems"] for r in results])
    for result in results:
        assert result["saved"] == [True, True, True]
        assert result["steps"] == [1, 2]
    for label in _subsets(launch):
        assert _step_folders(launch.root / f"subset-manager-{label}") == [1, 2]


def test_without_primary_every_process_commits_its_own_folder(two_processes: Launch) -> None:
    assert two_processes.check("own_save") == [None, None]
    assert_restored(two_processes.check("own_restore"))
    for process in (0, 1):
        folder = two_processes.root / f"own-{process}"
        assert sorted(p.name for p in folder.glob("ocdbt.process_*")) == [f"ocdbt.process_{process}"]
        assert _is_committed(folder)
        assert not list(two_processes.root.glob(f"own-{process}.orbax-checkpoint-tmp*"))
        # Each folder holds that process's state alone; one process restores it.
        local = state.mesh_of((2, 2), devices=jax.devices()[:4])
        assert_restored([workloads.restore_and_check(folder, local, _SPECS)])


def test_manager_without_primary_keeps_steps_per_process(two_processes: Launch) -> None:
    for process, result in enumerate(two_processes.check("own_manager")):
        assert_restored([result if isinstance(result, BaseException) else result["problems"]])
        assert result["steps"] == [1, 2]
        assert _step_folders(two_processes.root / f"own-manager-{process}") == [1, 2]


def test_async_save_across_processes(launch: Launch) -> None:
    assert_restored(launch.check("async"))


def test_async_manager_across_processes(two_processes: Launch) -> None:
    results = two_processes.check("manager")
    assert_restored([r if isinstance(r, BaseException) else r["problems"] for r in results])
    assert [r["steps"] for r in results] == [[1, 2], [1, 2]]
    assert _step_folders(two_processes.root / "manager") == [1, 2]


@pytest.mark.parametrize("saved_by", ["two_processes", "four_processes"])
def test_async_save_restores_on_one_process(saved_by: str, request: pytest.FixtureRequest) -> None:
    launch: Launch = request.getfixturevalue(saved_by)
    mesh = state.mesh_of((8,), ("data",))
    specs = {"weights": P(None, "data"), "rows": P("data"), "bias": P(), "table": P()}
    assert_restored([workloads.restore_and_check(launch.root / "async", mesh, specs)])
