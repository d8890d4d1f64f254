"""Recovery time of the emergency managers, jaxpoint's and orbax's, side by side in one run.

    .venv/bin/python -m benchmarks.emergency                 # 2 processes x 2 devices, 1 GiB
    .venv/bin/python -m benchmarks.emergency --mib 256 --reps 1

2 processes joined by `jax.distributed` on loopback (jaxpoint's test harness), one data-
parallel replica per process: mesh (replica=2, model=2), the state (`--mib`, one replica's
copy) sharded over "model", replicated over "replica". Each manager saves step 0 to both
tiers and step 1 to the local tier only; local folders are on the disk (a host's SSD), the
persistent folder too. Then, for each case, a fresh manager restores `restore()` (the
newest step it can rebuild) after the page cache was dropped (`posix_fadvise(DONTNEED)`),
timed from a barrier to a barrier after `block_until_ready` (the slowest process's time;
a first, uncounted round compiles what each manager compiles):

  local intact       every local folder is there;
  local, one lost    process 1's local folder is gone (a replaced host);
  persistent         every local folder is gone.

Orbax 0.12.8 writes local checkpoints on the non-primary replica only (process 1 here), so
"one lost" leaves it the persistent step 0; jaxpoint writes on every process and rebuilds
step 1, process 1 receiving its shards from process 0. Orbax is set up as it requires on
CPU (see tests/core/emergency/orbax_processes.py). Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import cache

LEAVES = 8
CASES = ("local intact", "local, one lost", "persistent")



def _value(index: int, shape: tuple[int, ...], step: int) -> Any:
    import numpy as np

    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) + index + step * 100


def _state(mesh: Any, shape: tuple[int, ...], step: int) -> dict[str, Any]:
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    sharding = NamedSharding(mesh, P("model"))
    return {f"leaf_{i}": jax.make_array_from_callback(
        shape, sharding, lambda index, i=i: _value(i, shape, step)[index]) for i in range(LEAVES)}


def _check(state: dict[str, Any], step: int, what: str) -> None:
    import numpy as np

    for name, array in state.items():
        for shard in array.addressable_shards:  # one shard per leaf suffices to tell the step
            expected = _value(int(name.split("_")[1]), array.shape, step)[shard.index]
            if not np.array_equal(np.asarray(shard.data), expected):
                raise AssertionError(f"{what}: wrong values in {name} at {shard.index} for step "
                                     f"{step}: {np.asarray(shard.data).ravel()[:3]}")
            break


def _manager(kind: str, local: Path, persistent: Path, mesh: Any, abstract: Any) -> Any:
    if kind == "jaxpoint":
        from jaxpoint.core import emergency

        return emergency.CheckpointManager(local, persistent, mesh, abstract, options=(
            emergency.CheckpointManagerOptions(
                local=emergency.LocalCheckpointOptions(save_interval_steps=1, max_to_keep=2),
                persistent=emergency.PersistentCheckpointOptions(save_interval_steps=2))))
    from orbax.checkpoint.experimental.emergency import checkpoint_manager as orbax_emergency

    return orbax_emergency.CheckpointManager(local, persistent, mesh, abstract, options=(
        orbax_emergency.CheckpointManagerOptions(
            local=orbax_emergency.LocalCheckpointOptions(save_interval_steps=1, max_to_keep=2),
            persistent=orbax_emergency.PersistentCheckpointOptions(save_interval_steps=2))))


def _args(kind: str, state: Any) -> Any:
    if kind == "jaxpoint":
        import jaxpoint.core as ocp
    else:
        import orbax.checkpoint as ocp
    return ocp.args.Composite(state=ocp.args.PyTreeSave(state))


def _folders(root: Path, kind: str, case: str, process: int) -> tuple[Path, Path]:
    case_root = root / kind / case.replace(" ", "_").replace(",", "")
    local = case_root / f"local-{process}"
    local.mkdir(parents=True, exist_ok=True)
    return local, case_root / "persistent"


def _orbax_setup() -> None:
    """What orbax's emergency manager needs on CPU (tests/core/emergency/orbax_processes.py)."""
    from absl import flags
    from orbax.checkpoint._src.multihost import multihost as orbax_multihost

    orbax_multihost.initialize_runtime_to_distributed_ids()
    orbax_multihost.initialize_distributed_to_device_ids()
    flags.FLAGS.mark_as_parsed()


def _child(root: str, mib: int, reps: int, cases: tuple[str, ...] = CASES,
           log_prefix: str | None = None) -> dict[str, Any]:
    """One process: save with each manager once, then time each recovery case `reps` times."""
    import logging

    import jax
    import numpy as np
    from jaxpoint.core import multihost

    if log_prefix:  # each restore's phase lines (read, broadcast), one file per process
        logging.basicConfig(filename=f"{log_prefix}-p{multihost.process_index()}.log",
                            level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    _orbax_setup()
    base, me = Path(root), multihost.process_index()
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, -1), ("replica", "model"))
    rows = mib * 2**20 // LEAVES // 4 // 1024
    shape = (rows - rows % 2, 1024)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                            _state(mesh, (2, 1024), 0))
    abstract = {k: jax.ShapeDtypeStruct(shape, v.dtype, sharding=v.sharding)
                for k, v in abstract.items()}
    saved: dict[str, tuple[Path, Path]] = {}
    for kind in ("jaxpoint", "orbax"):
        local, persistent = _folders(base, kind, "saved", me)
        persistent.mkdir(exist_ok=True)
        manager = _manager(kind, local, persistent, mesh, abstract)
        for step in (0, 1):
            manager.save(step, args=_args(kind, _state(mesh, shape, step)))
        manager.wait_until_finished()
        manager.close()
        saved[kind] = (local, persistent)
    multihost.sync_global_processes("benchmark/saved", timeout_s=1800)
    times: dict[str, list[float]] = {}
    steps: dict[str, int] = {}
    for rep in range(reps + 1):  # round 0 compiles the broadcasts and is not counted
        for case in cases:
            for kind in (("jaxpoint", "orbax") if rep % 2 == 0 else ("orbax", "jaxpoint")):
                local, persistent = _folders(base, kind, f"{case} {rep}", me)
                source_local, source_persistent = saved[kind]
                if me == 0:
                    shutil.copytree(source_persistent, persistent)
                lose = case == "persistent" or (case == "local, one lost" and me == 1)
                if not lose:
                    shutil.copytree(source_local, local, dirs_exist_ok=True)
                multihost.sync_global_processes("benchmark/copied", timeout_s=1800)
                cache.drop([str(local)])
                if me == 0:
                    cache.drop([str(persistent)])
                manager = _manager(kind, local, persistent, mesh, abstract)
                multihost.sync_global_processes("benchmark/start", timeout_s=1800)
                started = time.perf_counter()
                restored = manager.restore(None) if kind == "orbax" else manager.restore()
                jax.block_until_ready(restored.state)
                multihost.sync_global_processes("benchmark/end", timeout_s=1800)
                elapsed = time.perf_counter() - started
                step = 0 if case == "persistent" or (kind, case) == ("orbax", CASES[1]) else 1
                _check(restored.state, step, f"{kind} {case}")
                manager.close()
                del restored
                if rep:
                    times.setdefault(f"{kind}|{case}", []).append(elapsed)
                steps[f"{kind}|{case}"] = step
                multihost.sync_global_processes("benchmark/closed", timeout_s=1800)
                if me == 0:
                    shutil.rmtree(persistent.parent, ignore_errors=True)
                shutil.rmtree(local, ignore_errors=True)
    return {"times": times, "steps": steps, "bytes": LEAVES * shape[0] * shape[1] * 4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.emergency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="state size in MiB (one replica)")
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions per case")
    parser.add_argument("--dir", default=None, help="where the folders go (default: a tmp dir)")
    parser.add_argument("--case", action="append", choices=CASES, default=None,
                        help="time only this case (repeatable; default: all)")
    parser.add_argument("--log", default=None, metavar="PREFIX",
                        help="write each process's INFO lines (read and broadcast times) to "
                             "PREFIX-p<process>.log")
    args = parser.parse_args(argv)
    from jaxpoint.core.testing.multiprocess import run_processes

    from benchmarks import emergency  # children import the target by its module name

    cases = tuple(case for case in CASES if args.case is None or case in args.case)
    with tempfile.TemporaryDirectory(prefix="jaxpoint-emergency-", dir=args.dir) as root:
        started = time.monotonic()
        results = run_processes(emergency._child, num_processes=2, devices_per_process=2,
                                timeout_s=3600, args=(root, args.mib, args.reps, cases, args.log))
        wall_s = time.monotonic() - started
    times, steps = results[0]["times"], results[0]["steps"]
    size_mib = results[0]["bytes"] / 2**20
    print(f"\n2 processes x 2 CPU devices, one replica per process, {size_mib:.0f} MiB state "
          f"(one replica), cold page cache, {args.reps} repetitions, load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| case | jaxpoint median s | jaxpoint step | orbax median s | orbax step | "
          "orbax / jaxpoint |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        ours, theirs = (statistics.median(times[f"{k}|{case}"]) for k in ("jaxpoint", "orbax"))
        print(f"| {case} | {ours:.2f} | {steps['jaxpoint|' + case]} | {theirs:.2f} | "
              f"{steps['orbax|' + case]} | {theirs / ours:.2f} |")
    print(json.dumps({"mib": size_mib, "reps": args.reps, "times_s": times, "steps": steps,
                      "wall_s": wall_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
