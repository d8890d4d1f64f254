"""Single-replica restore: one replica reads from storage, the others receive by collective.

Across processes (the launches): replicas on one process each (2 x 4 devices, mesh
replica=2 x model=4), replicas spanning two processes each (4 x 2 devices, mesh
replica=2 x data=2 x model=2), and one replica per process read by the third one. The
processes outside the reading replica restore from a copy of the checkpoint that holds no
array data at all, so each success shows that they read none. In this process (8
devices): exact bits for every dtype, the options' validation and batching.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest
from core.multiprocess import workloads
from core.multiprocess.checks import Launch, assert_restored, reraise
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P
from jaxpoint.core.errors import CorruptCheckpointError, InvalidArgumentError, ProcessFailureError
from jaxpoint.core.handlers.single_replica import (
    SingleReplicaArrayHandler,
    SingleReplicaArrayRestoreArgs,
    broadcast_batches,
)

_BATCH = re.compile(r"batch (\d+)/(\d+): (\d+) leaves, (\d+) bytes per device")
# A failed read is reported at once; a deadlock would run into the 30 s timeouts.
_FAILURE_REPORTED_WITHIN_S = 15.0

# ---------------------------------------------------------------- across processes


def test_other_replicas_receive_without_reading(launch: Launch) -> None:
    results = launch.check("single_replica")
    assert_restored(results)
    readers = [0] if len(launch.reports) == 2 else [0, 1]
    assert launch.reports[0]["readers"] == readers
    for _, log in results:
        assert any(f"read by processes {readers}" in line for line in log), log


def test_broadcast_runs_in_batches_within_the_byte_limit(launch: Launch) -> None:
    logs = [[line for line in result[1] if _BATCH.search(line)]
            for result in launch.check("single_replica")]
    assert all(log == logs[0] for log in logs), logs  # one program per batch, on every process
    batches = [tuple(map(int, _BATCH.search(line).groups())) for line in logs[0]]
    assert len(batches) >= 2
    assert [b[0] for b in batches] == list(range(1, len(batches) + 1))
    assert sum(b[2] for b in batches) == 4  # every leaf exactly once
    for _, _, leaves, size in batches:
        assert size <= workloads.BROADCAST_LIMIT_BYTES or leaves == 1


def test_other_primary_replica_and_mixed_leaves(four_processes: Launch) -> None:
    results = four_processes.check("single_replica_primary_2")
    assert_restored(results)
    assert all(set(problems) == {"weights", "rows", "bias", "table", "counts", "step", "name"}
               for problems, _ in results)


@pytest.mark.parametrize("check", ["single_replica_missing_data", "single_replica_corrupt_data"])
def test_reader_failure_reaches_every_process(launch: Launch, check: str) -> None:
    readers = launch.reports[0]["readers"]
    named = ", ".join(map(str, readers))
    for report in launch.reports:
        with pytest.raises(
            ProcessFailureError,
            match=rf"agreement 'single-replica/read', but process\(es\) \[{named}\] failed "
            rf"\(process {readers[0]}: CorruptCheckpointError: .*Process {report['process']} "
            "raises this too",
        ):
            reraise(report[check])
        assert report[f"{check}_s"] < _FAILURE_REPORTED_WITHIN_S


def test_processes_stay_in_step_after_reader_failures(launch: Launch) -> None:
    assert_restored(launch.check("after_single_replica_failures"))


# ---------------------------------------------------------------- in this process


def _mesh(shape: tuple[int, ...], names: tuple[str, ...]) -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.array(jax.devices()).reshape(shape), names)


def _bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values).view(np.uint8)


def _tricky_values() -> dict[str, np.ndarray]:
    floats = np.array([-0.0, np.nan, np.inf, -1.5, 2.0**-140, 3.0, 7.0, -8.0], np.float32)
    floats[1] = np.frombuffer(np.uint32(0x7FC0_1234).tobytes(), np.float32)[0]  # NaN payload
    floats[6] = np.frombuffer(np.uint32(0x7F80_0001).tobytes(), np.float32)[0]  # signaling NaN
    return {
        "float32": floats.reshape(2, 4),
        "bfloat16": np.array([-0.0, 1.0, -2.5, np.inf], dtype=jnp.bfloat16),
        "bool": np.array([True, False, False, True]),
        "int8": np.array([-128, -1, 0, 127], np.int8),
        "uint32": np.array([0, 1, 2**32 - 1, 7], np.uint32),
        "complex64": np.array([1 + 2j, -3j, 0, 4], np.complex64),
        "scalar": np.array(-0.0, np.float32),
    }


def _save(tmp_path: Path, tree: dict[str, Any]) -> Path:
    path = tmp_path / "ckpt"
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=ocp.args.StandardSave(tree))
    return path


def _restore(path: Path, target: dict[str, Any], restore_args: dict[str, Any],
             handler: SingleReplicaArrayHandler | None = None) -> dict[str, Any]:
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(single_replica_handler=handler)) as ckptr:
        return ckptr.restore(path, args=ocp.args.PyTreeRestore(target, restore_args=restore_args))


def test_every_dtype_arrives_bit_exact_on_every_replica(tmp_path: Path) -> None:
    values = _tricky_values()
    mesh = _mesh((4, 2), ("replica", "model"))
    specs = {name: P("model") if value.ndim == 1 else P() for name, value in values.items()}
    specs["float32"] = P(None, "model")
    tree = {name: jax.device_put(value, NamedSharding(mesh, specs[name]))
            for name, value in values.items()}
    path = _save(tmp_path, tree)
    restore_args = {name: SingleReplicaArrayRestoreArgs(sharding=leaf.sharding)
                    for name, leaf in tree.items()}
    restored = _restore(path, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                          sharding=x.sharding), tree),
                        restore_args, SingleReplicaArrayHandler(broadcast_memory_limit_bytes=64))
    for name, value in values.items():
        array = restored[name]
        assert array.sharding == tree[name].sharding and array.dtype == value.dtype, name
        for shard in array.addressable_shards:
            np.testing.assert_array_equal(_bits(np.asarray(shard.data)), _bits(value[shard.index]),
                                          err_msg=name)


@pytest.fixture
def small_checkpoint(tmp_path: Path) -> tuple[Path, jax.sharding.Mesh]:
    mesh = _mesh((2, 4), ("replica", "model"))
    tree = {"w": jax.device_put(np.arange(8.0, dtype=np.float32), NamedSharding(mesh, P("model"))),
            "b": jax.device_put(np.ones(4, np.int32), NamedSharding(mesh, P()))}
    return _save(tmp_path, tree), mesh


def _args(sharding: Any, **options: Any) -> SingleReplicaArrayRestoreArgs:
    return SingleReplicaArrayRestoreArgs(sharding=sharding, **options)


def test_mixed_with_plain_leaves_in_one_process(
    small_checkpoint: tuple[Path, jax.sharding.Mesh],
) -> None:
    path, mesh = small_checkpoint
    restored = _restore(path, None, {
        "w": _args(NamedSharding(mesh, P("model")), primary_replica_id=1),
        "b": ocp.ArrayRestoreArgs(sharding=NamedSharding(mesh, P()))})
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(8.0))
    np.testing.assert_array_equal(np.asarray(restored["b"]), np.ones(4))


@pytest.mark.parametrize("make_args, match", [
    (lambda mesh: _args(SingleDeviceSharding(jax.devices()[0])),
     r"Expected a NamedSharding at tree path .*'w'.* got SingleDeviceSharding"),
    (lambda mesh: _args(NamedSharding(mesh, P("replica"))),
     r"replicated along replica axis 'replica', but its spec .* shards it there"),
    (lambda mesh: _args(NamedSharding(mesh, P("model")), replica_axis_index=2),
     r"Expected replica_axis_index < 2 for the mesh .* got 2"),
    (lambda mesh: _args(NamedSharding(mesh, P("model")), primary_replica_id=2),
     r"Expected primary_replica_id < 2 \(replicas along axis 'replica'\) .* got 2"),
    (lambda mesh: _args(NamedSharding(mesh, P("model")), primary_replica_id=-1),
     r"Expected primary_replica_id at tree path .* to be an int >= 0, got -1"),
    (lambda mesh: _args(NamedSharding(mesh, P("model")), single_replica_sharding=NamedSharding(
        mesh, P("model"))),
     r"Expected single_replica_sharding at tree path .* to cover the devices of primary "
     r"replica 0"),
])
def test_invalid_single_replica_args_are_refused(
    small_checkpoint: tuple[Path, jax.sharding.Mesh], make_args: Any, match: str,
) -> None:
    path, mesh = small_checkpoint
    with pytest.raises(InvalidArgumentError, match=match):
        _restore(path, None, {"w": make_args(mesh), "b": ocp.ArrayRestoreArgs(
            sharding=NamedSharding(mesh, P()))})


def test_leaves_on_different_meshes_are_refused(
    small_checkpoint: tuple[Path, jax.sharding.Mesh],
) -> None:
    path, mesh = small_checkpoint
    other = _mesh((4, 2), ("replica", "model"))
    with pytest.raises(InvalidArgumentError, match=r"share one mesh, replica axis and primary "
                       r"replica, but tree path .*'w'.* has mesh"):
        _restore(path, None, {"b": _args(NamedSharding(mesh, P())),
                              "w": _args(NamedSharding(other, P("model")))})


def test_missing_data_in_one_process_raises_the_read_error(
    small_checkpoint: tuple[Path, jax.sharding.Mesh], tmp_path: Path,
) -> None:
    path, mesh = small_checkpoint
    workloads.strip_array_data(path, tmp_path / "stripped")
    with pytest.raises(CorruptCheckpointError, match=r"Expected stored array parameter 'b' .* "
                       "found it incomplete"):
        _restore(tmp_path / "stripped", None, {"w": _args(NamedSharding(mesh, P("model"))),
                                               "b": _args(NamedSharding(mesh, P()))})


@pytest.mark.parametrize("options, match", [
    ({"broadcast_memory_limit_bytes": 0}, r"broadcast_memory_limit_bytes to be an int >= 1"),
    ({"timeout_s": 0}, r"Expected timeout_s > 0 seconds for SingleReplicaArrayHandler"),
    ({"replica_axis_index": -1}, r"Expected replica_axis_index to be an int >= 0, got -1"),
])
def test_invalid_handler_options_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        SingleReplicaArrayHandler(**options)


@pytest.mark.parametrize("sizes, limit, expected", [
    ([3, 3, 5, 1, 9], 6, [range(0, 2), range(2, 4), range(4, 5)]),
    ([10], 4, [range(0, 1)]),
    ([], 4, []),
    ([1, 1, 1], 100, [range(0, 3)]),
])
def test_broadcast_batches(sizes: list[int], limit: int, expected: list[range]) -> None:
    assert broadcast_batches(sizes, limit) == expected


def test_eight_devices_here() -> None:
    assert jax.device_count() == 8, os.environ.get("XLA_FLAGS")
