"""Single-replica restore against every replica reading from storage, across real processes.

    .venv/bin/python -m benchmarks.single_replica              # 2 processes x 4 devices, 256 MiB
    .venv/bin/python -m benchmarks.single_replica --processes 4 --devices 2 --mib 512

N processes joined by `jax.distributed` on loopback (jaxpoint's test harness), one data-
parallel replica per process: mesh (replica=N, model=K), every array sharded over "model"
and replicated over "replica", so each replica holds the whole state. One save, then
repetitions that alternate the two restores of the same checkpoint onto the same target:

  all-read        `ArrayRestoreArgs`: every process reads its own shards from storage,
                  N x the state's bytes read in all;
  single-replica  `SingleReplicaArrayRestoreArgs`: replica 0 reads (1 x the bytes), the
                  others receive the arrays by all-reduce over the replica axis.

Each restore is timed from a barrier to a barrier after `block_until_ready`, so the time is
the slowest process's. "cold" drops the checkpoint's pages from the page cache first
(`posix_fadvise(DONTNEED)`, no root needed), "warm" reads what the page cache holds.
Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import cache

LEAVES = 8



def _restore_args(mode: str, target: dict[str, Any], limit_bytes: int) -> tuple[Any, Any]:
    import jaxpoint.core as ocp
    from jaxpoint.core.handlers.single_replica import (
        SingleReplicaArrayHandler,
        SingleReplicaArrayRestoreArgs,
    )

    if mode == "all-read":
        return (ocp.PyTreeCheckpointHandler(),
                {name: ocp.ArrayRestoreArgs(sharding=leaf.sharding) for name, leaf in target.items()})
    handler = SingleReplicaArrayHandler(broadcast_memory_limit_bytes=limit_bytes)
    return (ocp.PyTreeCheckpointHandler(single_replica_handler=handler),
            {name: SingleReplicaArrayRestoreArgs(sharding=leaf.sharding)
             for name, leaf in target.items()})


class _Phases(logging.Handler):
    """Keeps the read and broadcast seconds the single-replica handler logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.phases: list[tuple[float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "broadcast_s"):  # the handler's timing line carries its phases
            self.phases.append((record.read_s, record.broadcast_s))


def _timed_restore(path: Path, mode: str, target: dict[str, Any], limit_bytes: int,
                   *, is_cold: bool) -> float:
    import jax
    import jaxpoint.core as ocp
    from jaxpoint.core import multihost

    if is_cold and multihost.process_index() == 0:
        cache.drop([str(path)])
    handler, restore_args = _restore_args(mode, target, limit_bytes)
    multihost.sync_global_processes("benchmark/start", timeout_s=600)
    started = time.perf_counter()
    with ocp.Checkpointer(handler) as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            target, restore_args=restore_args))
    jax.block_until_ready(restored)
    multihost.sync_global_processes("benchmark/end", timeout_s=600)
    elapsed = time.perf_counter() - started
    _check(restored)
    return elapsed


def _value(index: int, shape: tuple[int, ...]) -> Any:
    import numpy as np

    return (np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) + index)


def _check(restored: dict[str, Any]) -> None:
    import numpy as np

    for name, array in restored.items():
        value = _value(int(name.split("_")[1]), array.shape)
        for shard in array.addressable_shards:
            if not np.array_equal(np.asarray(shard.data), value[shard.index]):
                raise AssertionError(f"wrong values in {name} at {shard.index}")


def _child(root: str, mib: int, reps: int, limit_mib: int) -> dict[str, Any]:
    """One process of the benchmark: save once, then alternate the two restores."""
    import jax
    import jaxpoint.core as ocp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    processes, local = jax.process_count(), jax.local_device_count()
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(processes, local),
                             ("replica", "model"))
    rows = mib * 2**20 // LEAVES // 4 // 1024
    shape = (rows - rows % local, 1024)
    sharding = NamedSharding(mesh, P("model"))
    state = {f"leaf_{i}": jax.make_array_from_callback(
        shape, sharding, lambda index, i=i: _value(i, shape)[index]) for i in range(LEAVES)}
    path = Path(root) / "state"
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=ocp.args.PyTreeSave(state))
    target = {name: jax.ShapeDtypeStruct(shape, np.float32, sharding=sharding) for name in state}
    del state
    times: dict[str, list[float]] = {}
    phases = _Phases()
    logger = logging.getLogger("jaxpoint.core.handlers.single_replica")
    logger.addHandler(phases)
    logger.setLevel(logging.INFO)
    for rep in range(reps + 1):  # the first round compiles and is not counted
        for temperature in ("cold", "warm"):
            for mode in (("all-read", "single-replica") if rep % 2 else
                         ("single-replica", "all-read")):
                elapsed = _timed_restore(path, mode, target, limit_mib * 2**20,
                                         is_cold=temperature == "cold")
                if rep:
                    times.setdefault(f"{mode} {temperature}", []).append(elapsed)
                    if mode == "single-replica":
                        read_s, broadcast_s = phases.phases[-1]
                        times.setdefault(f"read {temperature}", []).append(read_s)
                        times.setdefault(f"broadcast {temperature}", []).append(broadcast_s)
    return {"times": times, "bytes": LEAVES * int(np.prod(shape)) * 4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.single_replica",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="processes = replicas")
    parser.add_argument("--devices", type=int, default=4, help="CPU devices per process")
    parser.add_argument("--mib", type=int, default=256, help="state size in MiB (one replica)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per restore")
    parser.add_argument("--limit-mib", type=int, default=64,
                        help="broadcast_memory_limit_bytes, in MiB per device")
    args = parser.parse_args(argv)
    from jaxpoint.core.testing.multiprocess import run_processes

    from benchmarks import single_replica  # children import the target by its module name

    with tempfile.TemporaryDirectory(prefix="jaxpoint-single-replica-") as root:
        started = time.monotonic()
        results = run_processes(single_replica._child, num_processes=args.processes,
                                devices_per_process=args.devices, timeout_s=1800,
                                args=(root, args.mib, args.reps, args.limit_mib))
        wall_s = time.monotonic() - started
    times = results[0]["times"]  # barriers make every process's times the slowest one's
    size_mib = results[0]["bytes"] / 2**20
    print(f"\n{args.processes} processes x {args.devices} CPU devices, one replica per process, "
          f"{size_mib:.0f} MiB state, broadcast batches of {args.limit_mib} MiB per device, "
          f"{args.reps} repetitions, load average {os.getloadavg()[0]:.1f}\n")
    print("| restore | cache | median s | min s | of which read / broadcast (median s) | "
          "read from storage |")
    print("|---|---|---|---|---|---|")
    for key in ("all-read cold", "single-replica cold", "all-read warm", "single-replica warm"):
        mode, cache = key.split()
        read = size_mib * (args.processes if mode == "all-read" else 1)
        split = "" if mode == "all-read" else (
            f"{statistics.median(times['read ' + cache]):.3f} / "
            f"{statistics.median(times['broadcast ' + cache]):.3f}")
        print(f"| {mode} | {cache} | {statistics.median(times[key]):.3f} | "
              f"{min(times[key]):.3f} | {split} | {read:.0f} MiB |")
    print(json.dumps({"processes": args.processes, "devices": args.devices, "mib": size_mib,
                      "limit_mib": args.limit_mib, "times_s": times, "wall_s": wall_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
