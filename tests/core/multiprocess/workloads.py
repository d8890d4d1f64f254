"""What each process runs in the multi-process tests, one launch per process count.

Starting JAX processes costs seconds each on this 2-core machine, so each launch runs many
checks in order and reports what every process saw: `report[check]` is the check's result,
or the exception it raised (tests re-raise it under `pytest.raises`). Checks that kill a
process run last; a process about to die first stores its report beside the checkpoints.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jaxpoint.core as ocp
import numpy as np
from core.multiprocess import crash_handler, state
from jax.sharding import PartitionSpec as P
from jaxpoint.core import multihost
from jaxpoint.core.handlers.single_replica import (
    SingleReplicaArrayHandler,
    SingleReplicaArrayRestoreArgs,
)
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions

# Far below the harness's 30 s heartbeat timeout, so survivors of a crash raise first.
BARRIER_TIMEOUT_S = 2.0
# Splits the single-replica leaves below into several broadcast batches.
BROADCAST_LIMIT_BYTES = 128
KEPT = 2


def capture(report: dict[str, Any], name: str, check: Callable[[], Any]) -> None:
    """Runs `check`, storing its result or its exception (with the time it took)."""
    started = time.monotonic()
    try:
        report[name] = check()
    except Exception as error:
        report[name] = error
    report[f"{name}_s"] = time.monotonic() - started


def save_report(root: Path, report: dict[str, Any]) -> None:
    path = root / f"report-{multihost.process_index()}.pkl"
    path.with_suffix(".tmp").write_bytes(pickle.dumps(report))
    path.with_suffix(".tmp").replace(path)


def load_report(root: Path, process: int) -> dict[str, Any]:
    return pickle.loads((root / f"report-{process}.pkl").read_bytes())


def target_tree(mesh: jax.sharding.Mesh, specs: dict[str, P]) -> dict[str, Any]:
    """A restore target: arrays as ShapeDtypeStructs on `mesh`, the other leaves as values."""
    tree = state.abstract_state(mesh, specs)
    tree.update({state.NUMPY_LEAF: np.zeros(3, np.int64), state.SCALAR_LEAF: 0,
                 state.STRING_LEAF: ""})
    return tree


def restore_and_check(path: Path, mesh: jax.sharding.Mesh, specs: dict[str, P]) -> dict[str, str]:
    target = target_tree(mesh, specs)
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.StandardRestore(target))
    return {**state.check_arrays(restored, target), **state.check_extras(restored)}


def save_state(path: Path, tree: Any, **options: Any) -> None:
    mp = ocp.MultiprocessingOptions(barrier_timeout_s=30.0, **options)
    with ocp.Checkpointer(ocp.StandardCheckpointHandler(), multiprocessing_options=mp) as ckptr:
        ckptr.save(path, args=ocp.args.StandardSave(tree))


def strip_array_data(source: Path, destination: Path) -> None:
    """Copies a checkpoint without its array data: only the JSON metadata is left."""
    shutil.copytree(source, destination)
    for item in [destination, *destination.iterdir()]:
        for name in ("manifest.ocdbt", "d"):
            if (item / name).is_file():
                (item / name).unlink()
            elif (item / name).is_dir():
                shutil.rmtree(item / name)
        for database in item.glob("ocdbt.process_*") if item.is_dir() else ():
            shutil.rmtree(database)


def corrupt_array_data(source: Path, destination: Path) -> None:
    """Copies a checkpoint, flipping bytes in every data file of the array databases."""
    shutil.copytree(source, destination)
    for data_file in [*destination.glob("d/*"), *destination.glob("ocdbt.process_*/d/*")]:
        raw = bytearray(data_file.read_bytes())
        for offset in range(0, len(raw), 7):
            raw[offset] ^= 0xFF
        data_file.write_bytes(bytes(raw))


def own_shards_restore(report: dict[str, Any], root: Path, checkpoint: Path,
                       mesh: jax.sharding.Mesh, specs: dict[str, P]) -> None:
    """Each process restores from a copy holding only its own database's data files.

    The restore succeeds only if no process reads a chunk another process wrote.
    """
    me, count = multihost.process_index(), multihost.process_count()
    if me == 0:
        for process in range(count):
            copy = root / f"only-process-{process}"
            shutil.copytree(checkpoint, copy)
            for other in range(count):
                if other != process:
                    shutil.rmtree(copy / f"ocdbt.process_{other}" / "d")
    multihost.sync_global_processes("own-shard-copies-ready", timeout_s=60)
    capture(report, "restore_own_shards_only",
            lambda: restore_and_check(root / f"only-process-{me}", mesh, specs))


# ---------------------------------------------------------------- single-replica restore


def single_replica_restore(path: Path, mesh: jax.sharding.Mesh, specs: dict[str, P], *,
                           primary_replica_id: int = 0,
                           is_mixed: bool = False) -> tuple[dict[str, str], list[str]]:
    """Restores the arrays of `path` read by one replica; returns (problems, batch logs).

    `is_mixed`: "table" and the non-array leaves are restored as usual, by every process.
    """
    target: dict[str, Any] = state.abstract_state(mesh, specs)
    restore_args: dict[str, Any] = {name: SingleReplicaArrayRestoreArgs(sharding=leaf.sharding)
                                    for name, leaf in target.items()}
    if is_mixed:
        restore_args["table"] = ocp.ArrayRestoreArgs(sharding=target["table"].sharding)
        target.update({state.NUMPY_LEAF: np.zeros(3, np.int64), state.SCALAR_LEAF: 0,
                       state.STRING_LEAF: ""})
        restore_args.update({state.NUMPY_LEAF: ocp.RestoreArgs(restore_type=np.ndarray),
                             state.SCALAR_LEAF: ocp.RestoreArgs(restore_type=int),
                             state.STRING_LEAF: ocp.RestoreArgs(restore_type=str)})
    handler = ocp.PyTreeCheckpointHandler(single_replica_handler=SingleReplicaArrayHandler(
        primary_replica_id=primary_replica_id, broadcast_memory_limit_bytes=BROADCAST_LIMIT_BYTES,
        timeout_s=30.0))
    records = _BatchLog()
    logger = logging.getLogger("jaxpoint.core.handlers.single_replica")
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        with ocp.Checkpointer(handler) as checkpointer:
            restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
                target, restore_args=restore_args, partial_restore=not is_mixed))
    finally:
        logger.removeHandler(records)
    problems = state.check_arrays(restored, target)
    if is_mixed:
        problems.update(state.check_extras(restored))
    return problems, records.messages


class _BatchLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def single_replica_checks(report: dict[str, Any], root: Path, checkpoint: Path,
                          mesh: jax.sharding.Mesh, specs: dict[str, P], *,
                          primary_replica_id: int = 0) -> None:
    """Restores read by one replica: from good data, and with the readers' data broken.

    Processes outside the primary replica restore from a copy without any array data, so
    the restore only succeeds if they never read array data from storage.
    """
    readers = sorted({d.process_index for d in np.take(mesh.devices, primary_replica_id, axis=0).flat})
    is_reader = multihost.process_index() in readers
    if multihost.process_index() == readers[0]:
        strip_array_data(checkpoint, root / "metadata-only")
        corrupt_array_data(checkpoint, root / "corrupt")
    multihost.sync_global_processes("copies-ready", timeout_s=60)
    report["readers"] = readers
    metadata_only = root / "metadata-only"
    capture(report, "single_replica", lambda: single_replica_restore(
        checkpoint if is_reader else metadata_only, mesh, specs,
        primary_replica_id=primary_replica_id))
    capture(report, "single_replica_missing_data", lambda: single_replica_restore(
        metadata_only if is_reader else checkpoint, mesh, specs,
        primary_replica_id=primary_replica_id))
    capture(report, "single_replica_corrupt_data", lambda: single_replica_restore(
        root / "corrupt" if is_reader else checkpoint, mesh, specs,
        primary_replica_id=primary_replica_id))
    # Every process is still in step: a normal restore works after the failures.
    capture(report, "after_single_replica_failures",
            lambda: restore_and_check(checkpoint, mesh, _replicated_over_first_axis(mesh)))


def _replicated_over_first_axis(mesh: jax.sharding.Mesh) -> dict[str, P]:
    inner = mesh.axis_names[-1]
    return {"weights": P(None, inner), "rows": P(inner), "bias": P(inner), "table": P()}


# ---------------------------------------------------------------- managers and subsets


def manager_round_trip(directory: Path, tree: Any, mesh: jax.sharding.Mesh, specs: dict[str, P],
                       **mp_options: Any) -> dict[str, Any]:
    """Three async saves through a manager keeping two; then a restore of the latest."""
    options = CheckpointManagerOptions(
        max_to_keep=KEPT, enable_async_checkpointing=True,
        multiprocessing_options=ocp.MultiprocessingOptions(barrier_timeout_s=30.0, **mp_options))
    with CheckpointManager(directory, options=options) as manager:
        saved = [manager.save(step, args=ocp.args.StandardSave(tree), metrics={"step": step})
                 for step in range(3)]
        manager.wait_until_finished()
        target = target_tree(mesh, specs)
        restored = manager.restore(args=ocp.args.StandardRestore(target))
        return {"saved": saved, "steps": manager.all_steps(),
                "problems": {**state.check_arrays(restored, target), **state.check_extras(restored)}}


def async_round_trip(path: Path, tree: Any, mesh: jax.sharding.Mesh,
                     specs: dict[str, P]) -> dict[str, str]:
    with ocp.AsyncCheckpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=ocp.args.StandardSave(tree))
        checkpointer.wait_until_finished()
    return restore_and_check(path, mesh, specs)


def subset_checks(report: dict[str, Any], root: Path, subset: list[int]) -> None:
    """Only the processes of `subset` save and restore, on their own devices."""
    devices = [d for d in jax.devices() if d.process_index in subset]
    mesh = state.mesh_of((2, len(devices) // 2), devices=devices)
    specs = {name: spec for name, (_, _, spec) in state.ARRAYS.items()}
    tree = state.make_state(mesh)
    primary = subset[-1]
    label = "-".join(map(str, subset))
    capture(report, "subset_save", lambda: save_state(
        root / f"subset-{label}", tree, primary_host=primary, active_processes=subset))
    capture(report, "subset_restore", lambda: restore_and_check(root / f"subset-{label}", mesh, specs))
    capture(report, "subset_manager", lambda: manager_round_trip(
        root / f"subset-manager-{label}", tree, mesh, specs, primary_host=primary,
        active_processes=subset))


def own_directory_checks(report: dict[str, Any], root: Path) -> None:
    """primary_host=None: each process saves its own devices' state into its own folder."""
    me = multihost.process_index()
    mesh = state.mesh_of((2, jax.local_device_count() // 2), devices=jax.local_devices())
    specs = {name: spec for name, (_, _, spec) in state.ARRAYS.items()}
    tree = state.make_state(mesh)
    capture(report, "own_save", lambda: save_state(root / f"own-{me}", tree, primary_host=None))
    capture(report, "own_restore", lambda: restore_and_check(root / f"own-{me}", mesh, specs))
    capture(report, "own_manager", lambda: manager_round_trip(
        root / f"own-manager-{me}", tree, mesh, specs, primary_host=None))


# ---------------------------------------------------------------- Orbax in the same processes


def orbax_restore_args(target: dict[str, Any]) -> dict[str, Any]:
    import orbax.checkpoint as orbax_ocp

    def leaf_args(leaf: Any) -> Any:
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return orbax_ocp.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape,
                                              dtype=leaf.dtype)
        if isinstance(leaf, np.ndarray):
            return orbax_ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype)
        return orbax_ocp.RestoreArgs(restore_type=type(leaf))

    return {name: leaf_args(leaf) for name, leaf in target.items()}


def orbax_restore(path: Path, mesh: jax.sharding.Mesh, specs: dict[str, P]) -> dict[str, str]:
    """Real orbax-checkpoint restores a checkpoint jaxpoint wrote."""
    import orbax.checkpoint as orbax_ocp

    target = target_tree(mesh, specs)
    args = orbax_ocp.args.PyTreeRestore(item=target, restore_args=orbax_restore_args(target))
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(path, args=args)
    return {**state.check_arrays(restored, target), **state.check_extras(restored)}


def orbax_save(path: Path, tree: Any) -> None:
    import orbax.checkpoint as orbax_ocp

    without_strings = {k: v for k, v in tree.items() if k != state.STRING_LEAF}
    with orbax_ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, without_strings)
        checkpointer.wait_until_finished()


def restore_orbax_written(path: Path, mesh: jax.sharding.Mesh, specs: dict[str, P]) -> dict[str, str]:
    """jaxpoint restores what orbax processes wrote (it has no string leaf)."""
    target = target_tree(mesh, specs)
    del target[state.STRING_LEAF]
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.StandardRestore(target))
    extras = state.check_extras({**restored, state.STRING_LEAF: "run-7"})
    return {**state.check_arrays(restored, target), **extras}


# ---------------------------------------------------------------- typed random keys


def _key_data(count: int) -> np.ndarray:
    """The data of `count` rbg keys, the same on every process."""
    return np.asarray(jax.random.key_data(jax.random.split(jax.random.key(7, impl="rbg"), count)))


def key_state(mesh: jax.sharding.Mesh, spec: P) -> dict[str, jax.Array]:
    """Typed keys: a batch of rbg keys split by `spec` (across processes), a replicated one."""
    def placed(data: np.ndarray, spec: P, impl: str) -> jax.Array:
        sharding = jax.sharding.NamedSharding(mesh, spec)
        return jax.random.wrap_key_data(jax.make_array_from_callback(
            data.shape, sharding, lambda index: data[index]), impl=impl)

    return {"batch": placed(_key_data(8), spec, "rbg"),
            "single": placed(_single_key_data(), P(), "threefry2x32")}


def _single_key_data() -> np.ndarray:
    return np.asarray(jax.random.key_data(jax.random.key(3, impl="threefry2x32")))


def check_keys(restored: dict[str, Any], expected: dict[str, jax.Array]) -> dict[str, str]:
    """Leaf -> problem ('' if none): the impl, the sharding and every local shard's bits."""
    problems = {}
    for name, wanted in expected.items():
        got = restored[name]
        wanted_data = _key_data(8) if name == "batch" else _single_key_data()
        problem = ""
        if not jax.dtypes.issubdtype(got.dtype, jax.dtypes.prng_key) or (
                jax.random.key_impl(got) != jax.random.key_impl(wanted)):
            problem = f"restored {got.dtype}, not {wanted.dtype}"
        elif got.sharding != wanted.sharding:
            problem = f"sharding {got.sharding} instead of {wanted.sharding}"
        elif not got.sharding.is_fully_addressable and got.is_fully_addressable:
            problem = "restored as a local array"
        else:
            bad = [shard.index for shard in got.addressable_shards if not state.same_bits(
                jax.random.key_data(shard.data), wanted_data[shard.index])]
            problem = f"wrong key data in shards {bad}" if bad else ""
        problems[name] = problem
    return problems


def typed_key_round_trip(directory: Path, mesh: jax.sharding.Mesh) -> dict[str, dict[str, str]]:
    """A plain manager saves keys split across processes; restores them as saved and split
    along the other mesh axis."""
    first, second = mesh.axis_names
    saved = key_state(mesh, P(first))
    options = CheckpointManagerOptions(
        multiprocessing_options=ocp.MultiprocessingOptions(barrier_timeout_s=30.0))
    found = {}
    with CheckpointManager(directory, options=options) as manager:
        manager.save(0, args=ocp.args.StandardSave(saved))
        manager.wait_until_finished()
        for spec in (P(first), P(second)):
            expected = key_state(mesh, spec)
            target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                                 sharding=a.sharding), expected)
            restored = manager.restore(0, args=ocp.args.StandardRestore(target))
            found[str(spec)] = check_keys(restored, expected)
    return found


# ---------------------------------------------------------------- a process dies mid-save


def crash_checks(report: dict[str, Any], root: Path, tree: Any, *, crashing: int) -> None:
    """Process `crashing` fails writing step 5, then dies writing step 6; nothing commits.

    Stores this process's report first: the process that dies never returns one.
    """
    options = CheckpointManagerOptions(
        enable_async_checkpointing=False,
        multiprocessing_options=ocp.MultiprocessingOptions(barrier_timeout_s=BARRIER_TIMEOUT_S))
    manager = CheckpointManager(root / "crash", options=options)
    manager.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(tree)))
    capture(report, "failed_save", lambda: manager.save(5, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), boom=crash_handler.CrashSave(failing=crashing))))
    report["failed_work_folders"] = sorted(p.name for p in (root / "crash").glob("5*"))
    save_report(root, report)
    capture(report, "crash_save", lambda: manager.save(6, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), boom=crash_handler.CrashSave(crashing=crashing))))
    manager.reload()
    report["crash_steps_after"] = manager.all_steps()
    save_report(root, report)


# ---------------------------------------------------------------- the launches


def _save_and_restore_here(root: Path, mesh_shape: tuple[int, int]) -> tuple[Any, dict, Any, dict]:
    """The opening checks of every launch: save the state, restore it on the same mesh."""
    mesh = state.mesh_of(mesh_shape)
    specs = {name: spec for name, (_, _, spec) in state.ARRAYS.items()}
    tree = state.make_state(mesh)
    report: dict[str, Any] = {"process": multihost.process_index()}
    capture(report, "save", lambda: save_state(root / "sharded", tree))
    capture(report, "restore_same", lambda: restore_and_check(root / "sharded", mesh, specs))
    own_shards_restore(report, root, root / "sharded", mesh, specs)
    return mesh, specs, tree, report


def two_process_workload(root_text: str) -> dict[str, Any]:
    """2 processes x 4 devices; every check of the 2-process tests, in order."""
    root = Path(root_text)
    me = multihost.process_index()
    mesh, specs, tree, report = _save_and_restore_here(root, (2, 4))
    other = state.mesh_of((4, 2))
    capture(report, "restore_other_mesh", lambda: restore_and_check(root / "sharded", other, {
        "weights": P("model", "data"), "rows": P(None, "model"), "bias": P(("data", "model")),
        "table": P()}))
    sr_mesh = state.mesh_of((2, 4), ("replica", "model"))
    single_replica_checks(report, root, root / "sharded", sr_mesh,
                          _replicated_over_first_axis(sr_mesh))
    capture(report, "async", lambda: async_round_trip(root / "async", tree, mesh, specs))
    capture(report, "manager", lambda: manager_round_trip(root / "manager", tree, mesh, specs))
    subset_checks(report, root, [me])
    own_directory_checks(report, root)
    capture(report, "orbax_save", lambda: orbax_save(root / "orbax-written", tree))
    capture(report, "restore_orbax_written",
            lambda: restore_orbax_written(root / "orbax-written", mesh, specs))
    capture(report, "orbax_restores", lambda: orbax_restore(root / "sharded", other, {
        "weights": P("data"), "rows": P("model"), "bias": P(), "table": P()}))
    capture(report, "typed_keys", lambda: typed_key_round_trip(root / "typed-keys", mesh))
    crash_checks(report, root, tree, crashing=1)
    return report


def four_process_workload(root_text: str, two_process_root: str) -> dict[str, Any]:
    """4 processes x 2 devices; every check of the 4-process tests, in order."""
    root = Path(root_text)
    me = multihost.process_index()
    mesh, specs, tree, report = _save_and_restore_here(root, (4, 2))
    saved_on_two = Path(two_process_root) / "sharded"
    capture(report, "restore_from_two_processes", lambda: restore_and_check(saved_on_two, mesh, specs))
    cube = state.mesh_of((2, 2, 2), ("x", "y", "z"))
    capture(report, "restore_from_two_processes_other_mesh", lambda: restore_and_check(
        saved_on_two, cube, {"weights": P(("x", "y"), "z"), "rows": P("z", "x"),
                             "bias": P(("y", "z", "x")), "table": P()}))
    # Replicas span processes: replica 0 is processes 0 and 1, replica 1 is 2 and 3.
    spanning = state.mesh_of((2, 2, 2), ("replica", "data", "model"))
    single_replica_checks(report, root, root / "sharded", spanning, {
        "weights": P("data", "model"), "rows": P(("data", "model")), "bias": P("model"),
        "table": P()})
    # One replica per process, read by the third one.
    per_process = state.mesh_of((4, 2), ("replica", "model"))
    capture(report, "single_replica_primary_2", lambda: single_replica_restore(
        root / "sharded", per_process, _replicated_over_first_axis(per_process),
        primary_replica_id=2, is_mixed=True))
    subset_checks(report, root, [0, 1] if me < 2 else [2, 3])
    capture(report, "async", lambda: async_round_trip(root / "async", tree, mesh, specs))
    capture(report, "typed_keys", lambda: typed_key_round_trip(root / "typed-keys", mesh))
    crash_checks(report, root, tree, crashing=1)
    return report
