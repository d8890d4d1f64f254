"""Sharded saves across 2 and 4 processes, and restores across topologies.

Saves use a ("data", "model") mesh with one "data" row per process, so "weights" and
"rows" are split between processes while "bias" (replicated along "data"), "table" (fully
replicated) and the NumPy and scalar leaves must be written once, by process 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from core.multiprocess import state, workloads
from core.multiprocess.checks import Launch, assert_restored, stored_keys
from jax.sharding import PartitionSpec as P


def _expected_keys(process: int, count: int) -> set[str]:
    model = 8 // count  # devices per process = the "model" axis
    keys = {"weights/zarr.json", "rows/zarr.json", f"rows/c/{process}/0"}
    keys |= {f"weights/c/{process}/{j}" for j in range(model)}
    if process == 0:
        keys |= {"bias/zarr.json", "table/zarr.json", "table/c/0/0", "counts/zarr.json",
                 "counts/c/0", "step/zarr.json", "step/c"}
        keys |= {f"bias/c/{j}" for j in range(model)}
    return keys


def test_each_process_writes_only_its_own_shards_and_replicas_once(launch: Launch) -> None:
    item = launch.root / "sharded"
    count = len(launch.reports)
    written = {p: stored_keys(item / f"ocdbt.process_{p}") for p in range(count)}
    for process in range(count):
        assert written[process] == _expected_keys(process, count), f"process {process}"
    assert stored_keys(item) == set().union(*written.values())  # the merged database


def test_every_process_records_its_array_metadata(launch: Launch) -> None:
    count = len(launch.reports)
    for process in range(count):
        path = launch.root / "sharded" / "array_metadatas" / f"process_{process}"
        entries = [e["array_metadata"] for e in json.loads(path.read_text())["array_metadatas"]]
        shapes = {e["param_name"]: e["write_shape"] for e in entries}
        assert shapes == {"weights": [64 // count, 64 * count // 8], "rows": [8 // count, 6],
                          "bias": [8 * count // 8], "table": [5, 3]}, f"process {process}"


def test_restore_onto_the_saving_topology(launch: Launch) -> None:
    assert launch.check("save") == [None] * len(launch.reports)
    assert_restored(launch.check("restore_same"))


def test_restore_reads_only_the_processes_own_shards(launch: Launch) -> None:
    assert_restored(launch.check("restore_own_shards_only"))


def test_restore_onto_another_mesh_shape(two_processes: Launch) -> None:
    assert_restored(two_processes.check("restore_other_mesh"))  # 2x4 saved, 4x2 restored


def test_saved_on_two_processes_restores_on_four(four_processes: Launch) -> None:
    assert_restored(four_processes.check("restore_from_two_processes"))
    assert_restored(four_processes.check("restore_from_two_processes_other_mesh"))


@pytest.mark.parametrize("mesh_shape, specs", [
    ((8,), {"weights": P("data"), "rows": P("data"), "bias": P("data"), "table": P()}),
    ((2, 4), {"weights": P("model", "data"), "rows": P(), "bias": P("data"), "table": P()}),
], ids=["mesh_8", "mesh_2x4_transposed"])
@pytest.mark.parametrize("saved_by", ["two_processes", "four_processes"])
def test_restore_on_one_process_with_eight_devices(
    saved_by: str, mesh_shape: tuple[int, ...], specs: dict[str, P],
    request: pytest.FixtureRequest,
) -> None:
    launch: Launch = request.getfixturevalue(saved_by)
    names = ("data",) if len(mesh_shape) == 1 else ("data", "model")
    mesh = state.mesh_of(mesh_shape, names)
    assert_restored([workloads.restore_and_check(Path(launch.root) / "sharded", mesh, specs)])
