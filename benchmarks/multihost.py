"""Two processes on localhost joined by `jax.distributed`, each with 2 virtual CPU devices.

`launch` (parent side) starts the processes; `python -m benchmarks.multihost SPEC RESULT
PROCESS_ID` is one of them. Arrays are sharded over the 4 global devices along their
first axis; `restore_resharded` reads them onto a 2x2 mesh that splits the second axis
across processes instead, so every process needs bytes the other one wrote.

This is a minimal launcher of its own so that the orbax numbers never depend on
jaxpoint being importable.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import traceback
from typing import Any

import numpy as np

from benchmarks import cache, flavors, state

PROCESS_COUNT = 2
LOCAL_DEVICE_COUNT = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(spec: dict[str, Any], *, result_paths: list[str], log_paths: list[str],
           cwd: str, env: dict[str, str], timeout_s: float) -> list[int | None]:
    """Start every process, wait for all; kill the rest when one fails or time runs out.

    Returns each process's exit status (None where it had to be killed).
    """
    env = {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={LOCAL_DEVICE_COUNT}"}
    spec = {**spec, "port": free_port()}
    spec_path = result_paths[0] + ".spec.json"
    with open(spec_path, "w") as file:
        json.dump(spec, file)
    processes = []
    for process_id, (result_path, log_path) in enumerate(zip(result_paths, log_paths, strict=True)):
        with open(log_path, "w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "benchmarks.multihost", spec_path, result_path,
                 str(process_id)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and any(p.poll() is None for p in processes):
            if any(p.poll() not in (None, 0) for p in processes):
                break  # the others would wait at a barrier until the timeout
            time.sleep(0.1)
    finally:
        statuses: list[int | None] = []
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
                statuses.append(None)
            else:
                statuses.append(process.returncode)
    return statuses


def _global_tree(jax: Any, leaves: list[state.LeafSpec], sharding: Any, pool: np.ndarray) -> Any:
    def build(leaf: state.LeafSpec) -> Any:
        full = state.build_leaf(leaf, pool)
        # Copies, so that no device buffer keeps the whole leaf alive.
        return jax.make_array_from_callback(leaf.shape, sharding, lambda index: full[index].copy())

    return state.nest((leaf.path, build(leaf)) for leaf in leaves)


def _shardings(jax: Any, op: str) -> Any:
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = np.array(jax.devices())
    if op == "restore_resharded":
        mesh = Mesh(devices.reshape(2, 2)[:, ::-1], ("a", "b"))
        return NamedSharding(mesh, PartitionSpec("b", "a"))
    return NamedSharding(Mesh(devices, ("x",)), PartitionSpec("x"))


def _run(spec: dict[str, Any], process_id: int) -> dict[str, Any]:
    import jax
    from jax.experimental import multihost_utils

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{spec['port']}", num_processes=PROCESS_COUNT,
                               process_id=process_id, initialization_timeout=120)
    flavor = flavors.FLAVORS[spec["flavor"]]
    ocp = flavors.import_library(flavor)
    state_spec = state.StateSpec.from_json(spec["state"])
    leaves, pool = state.leaf_specs(state_spec), state.value_pool()
    op = spec["op"]
    sharding = _shardings(jax, op)
    manager = flavors.manager(ocp, flavor, spec["directory"], is_async=False)
    if op == "save":
        args = flavors.save_args(ocp, flavor, _global_tree(jax, leaves, sharding, pool))
    else:
        abstract = state.nest(
            (leaf.path, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding))
            for leaf in leaves)
        args = flavors.restore_args(ocp, flavor, abstract)
    multihost_utils.sync_global_devices("benchmark-setup")
    cache_method = cache.drop([spec["directory"]]) if process_id == 0 else ""
    multihost_utils.sync_global_devices("benchmark-start")
    start = time.perf_counter()
    if op == "save":
        manager.save(0, args=args)
        manager.wait_until_finished()
        if process_id == 0:
            cache.fsync_tree(spec["directory"])
    else:
        restored = jax.block_until_ready(manager.restore(0, args=args))
    multihost_utils.sync_global_devices("benchmark-end")
    seconds = time.perf_counter() - start
    if op != "save":
        for leaf in leaves:
            for shard in state.get(restored, leaf.path).addressable_shards:
                state.check_leaf(leaf, np.asarray(shard.data), pool, index=shard.index)
    manager.close()
    # The coordination service lives in process 0: nobody leaves before everyone is done.
    multihost_utils.sync_global_devices("benchmark-exit")
    return {"metrics": {"seconds": seconds}, "info": {"cache": cache_method}}


def main(argv: list[str]) -> None:
    spec_path, result_path, process_id = argv
    with open(spec_path) as file:
        spec = json.load(file)
    try:
        result = _run(spec, int(process_id))
    except BaseException as error:  # the parent turns this into a failed row
        traceback.print_exc()
        with open(result_path, "w") as file:
            json.dump({"error": f"{type(error).__name__}: {error}"}, file)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # jax.distributed's shutdown would wait for a peer that is stuck
    with open(result_path, "w") as file:
        json.dump(result, file)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # all processes passed the exit barrier; skip the slow teardown


if __name__ == "__main__":
    main(sys.argv[1:])
