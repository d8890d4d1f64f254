"""Device state on an accelerator: async-save staging and restore to the device.

Target 8 of the performance issue, measured side by side in one run:

- async save: how long `save()` blocks for a multi-GiB state on the device, against a plain
  device-to-host copy of the same state (`jax.device_get`, which starts every leaf's copy
  before waiting on any). Right after `save()` returns, the caller donates the state to a
  jitted step that overwrites it; the restore phase then checks the saved bytes exactly.
- restore to the device, cold and warm: against reading the same bytes from plain files
  and copying them to the device (`np.fromfile` + `jax.device_put`, leaf after leaf), and
  against the two parts alone (all files read by 8 threads; host-to-device of arrays
  already in memory).

Every trial runs in this one process (starting JAX on a GPU costs seconds, and device
time is scarce); trials of the libraries alternate within each repetition, each on a
freshly generated state. Run it where a GPU is, from the repository root, with a CUDA
build of JAX, orbax-checkpoint, and jaxpoint installed or on the path:

    PYTHONPATH=packages/core/src python -m benchmarks.gpu --gib 4 --reps 3 --out results-dir

It also runs on CPU (a smoke test of the script; the numbers mean nothing there).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import cache, flavors, machine
from benchmarks.memory import PeakProbe

LIBRARIES = ("jaxpoint", "orbax-uncompressed", "orbax")


def _jax() -> Any:
    import jax

    return jax


class DeviceState:
    """`leaves` float32 arrays of equal size on one device, generated there from a seed."""

    def __init__(self, total_bytes: int, leaves: int, device: Any) -> None:
        jax = _jax()
        self.device = device
        rows = max(1, total_bytes // leaves // 4 // 1024)
        self.shape = (rows, 1024)
        self.names = [f"layer_{i:03d}" for i in range(leaves)]
        self.nbytes = rows * 1024 * 4 * leaves
        sharding = jax.sharding.SingleDeviceSharding(device)

        def generate(seed: Any) -> dict[str, Any]:
            keys = jax.random.split(jax.random.key(seed), len(self.names))
            return {name: {"w": jax.random.normal(key, self.shape, dtype="float32")}
                    for name, key in zip(self.names, keys, strict=True)}

        self._generate = jax.jit(generate, out_shardings=sharding)
        # What a training step does to state it was handed: donate it and overwrite it.
        self.overwrite = jax.jit(lambda tree: jax.tree.map(lambda x: x * 0.0 - 7.0, tree),
                                 donate_argnums=0)
        self.abstract = {name: {"w": jax.ShapeDtypeStruct(self.shape, np.float32, sharding=sharding)}
                         for name in self.names}

    def make(self, seed: int) -> dict[str, Any]:
        return _jax().block_until_ready(self._generate(seed))

    def equal(self, tree: Any, seed: int) -> bool:
        jax = _jax()
        expected = self.make(seed)
        same = jax.tree.map(lambda a, b: bool(jax.numpy.array_equal(a, b)), tree, expected)
        return all(jax.tree.leaves(same))

    def leaves(self, tree: Any) -> list[Any]:
        return [tree[name]["w"] for name in self.names]


def _raw_paths(directory: str, state: DeviceState) -> list[str]:
    return [os.path.join(directory, name) for name in state.names]


def _prepare_cache(mode: str, directories: list[str]) -> str:
    if mode == "cold":
        return cache.drop(directories)
    cache.warm(directories)
    return "warm"


class Run:
    """Collects every trial's numbers; stops starting trials once the time budget is spent."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s
        self.trials: list[dict[str, Any]] = []
        self.skipped: list[str] = []

    def time_left(self) -> bool:
        return time.monotonic() < self.deadline

    def record(self, case: str, who: str, rep: int, trial: Callable[..., dict[str, Any]],
               *args: Any) -> None:
        if not self.time_left():
            self.skipped.append(f"{case}/{who}/rep{rep}")
            return
        gc.collect()
        try:
            metrics = trial(*args)
        except Exception as error:  # a library failing here is a result, not a crash
            traceback.print_exc()
            metrics = {"error": f"{type(error).__name__}: {error}"[:500]}
        print(f"  {case:<22} {who:<20} rep {rep}: {_brief(metrics)}", flush=True)
        self.trials.append({"case": case, "who": who, "rep": rep, **metrics})


def _brief(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items())


def device_to_host(state: DeviceState, seed: int) -> dict[str, Any]:
    jax = _jax()
    tree = state.make(seed)
    probe = PeakProbe.start()
    start = time.perf_counter()
    host = jax.device_get(tree)
    seconds = time.perf_counter() - start
    peak = probe.peak_above_baseline_bytes()
    del host
    return {"seconds": seconds, "gb_s": state.nbytes / seconds / 1e9,
            "peak_over_state": peak / state.nbytes}


def async_save(state: DeviceState, library: str, directory: str, seed: int) -> dict[str, Any]:
    flavor = flavors.FLAVORS[library]
    ocp = flavors.import_library(flavor)
    tree = state.make(seed)
    manager = flavors.manager(ocp, flavor, directory, is_async=True)
    cache.drop()
    probe = PeakProbe.start()
    start = time.perf_counter()
    manager.save(0, args=flavors.save_args(ocp, flavor, tree))
    blocked = time.perf_counter() - start
    tree = _jax().block_until_ready(state.overwrite(tree))  # the caller donates at once
    manager.wait_until_finished()
    finished = time.perf_counter() - start
    cache.fsync_tree(directory)
    durable = time.perf_counter() - start
    peak = probe.peak_above_baseline_bytes()
    manager.close()
    return {"blocked_s": blocked, "finished_s": finished, "durable_s": durable,
            "durable_gb_s": state.nbytes / durable / 1e9, "peak_over_state": peak / state.nbytes}


def library_restore(state: DeviceState, library: str, directory: str, seed: int,
                    mode: str, *, storage_options: Any = None) -> dict[str, Any]:
    """`storage_options`: jaxpoint's StorageOptions for `directory` (None: the defaults)."""
    jax = _jax()
    flavor = flavors.FLAVORS[library]
    ocp = flavors.import_library(flavor)
    where = directory if storage_options is None else ocp.Location.parse(
        directory, options=storage_options)
    manager = flavors.manager(ocp, flavor, where, is_async=False)
    args = flavors.restore_args(ocp, flavor, state.abstract)
    method = _prepare_cache(mode, [directory])
    probe = PeakProbe.start()
    start = time.perf_counter()
    restored = jax.block_until_ready(manager.restore(0, args=args))
    seconds = time.perf_counter() - start
    peak = probe.peak_above_baseline_bytes()
    manager.close()
    on_device = all(leaf.devices() == {state.device} for leaf in state.leaves(restored))
    return {"seconds": seconds, "gb_s": state.nbytes / seconds / 1e9,
            "peak_over_state": peak / state.nbytes, "cache": method,
            "on_device": on_device, "exact": state.equal(restored, seed)}


def jaxpoint_tuned(state: DeviceState, directory: str, read_ahead_mib: int,
                   mode: str) -> dict[str, Any]:
    """jaxpoint's restore with another read-ahead bound (profiling its one knob)."""
    import jaxpoint.core as ocp

    options = ocp.StorageOptions(read_bytes_in_flight=read_ahead_mib * 2**20)
    return library_restore(state, "jaxpoint", directory, 100, mode, storage_options=options)


def chunked_save(state: DeviceState, directory: str, seed: int, chunk_mib: int) -> dict[str, Any]:
    """jaxpoint's async save with every leaf split into chunks of `chunk_mib`."""
    import jaxpoint.core as ocp

    tree = state.make(seed)
    save_args = _jax().tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=chunk_mib * 2**20), tree)
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        enable_async_checkpointing=True))
    cache.drop()
    start = time.perf_counter()
    manager.save(0, args=ocp.args.StandardSave(tree, save_args=save_args))
    blocked = time.perf_counter() - start
    tree = _jax().block_until_ready(state.overwrite(tree))
    manager.wait_until_finished()
    finished = time.perf_counter() - start
    cache.fsync_tree(directory)
    durable = time.perf_counter() - start
    manager.close()
    return {"blocked_s": blocked, "finished_s": finished, "durable_s": durable,
            "durable_gb_s": state.nbytes / durable / 1e9}


def pinned_probe(device: Any) -> dict[str, Any]:
    """Whether the device has pinned host memory, and whether np.asarray of it copies."""
    jax = _jax()
    try:
        source = jax.numpy.arange(2**20, dtype="float32", device=device)
        pinned = jax.device_put(source, jax.sharding.SingleDeviceSharding(
            device, memory_kind="pinned_host"))
        host = np.asarray(pinned)
        return {"memories": [m.kind for m in device.addressable_memories()],
                "np_asarray_zero_copy": host.ctypes.data == pinned.unsafe_buffer_pointer(),
                "exact": bool(np.array_equal(host, np.arange(2**20, dtype=np.float32)))}
    except Exception as error:  # reported, not fatal: the probe only informs
        return {"error": f"{type(error).__name__}: {error}"[:300]}


def read_then_put(state: DeviceState, directory: str, mode: str) -> dict[str, Any]:
    """The plain way: each file read whole with np.fromfile, then copied to the device."""
    jax = _jax()
    method = _prepare_cache(mode, [directory])
    start = time.perf_counter()
    arrays = [jax.device_put(np.fromfile(path, dtype=np.float32).reshape(state.shape), state.device)
              for path in _raw_paths(directory, state)]
    jax.block_until_ready(arrays)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "gb_s": state.nbytes / seconds / 1e9, "cache": method}


def read_only(directory: str, state: DeviceState, mode: str) -> dict[str, Any]:
    method = _prepare_cache(mode, [directory])
    start = time.perf_counter()
    nbytes = cache.read_all(_raw_paths(directory, state))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "gb_s": nbytes / seconds / 1e9, "cache": method}


def host_to_device(state: DeviceState, host: list[np.ndarray]) -> dict[str, Any]:
    jax = _jax()
    start = time.perf_counter()
    jax.block_until_ready([jax.device_put(array, state.device) for array in host])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "gb_s": state.nbytes / seconds / 1e9}


def write_raw(state: DeviceState, directory: str, seed: int) -> list[np.ndarray]:
    os.makedirs(directory, exist_ok=True)
    host = [np.asarray(leaf) for leaf in state.leaves(state.make(seed))]
    for path, array in zip(_raw_paths(directory, state), host, strict=True):
        with open(path, "wb") as file:
            array.tofile(file)
            file.flush()
            os.fsync(file.fileno())
    return host


def summarize(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for trial in trials:
        row = rows.setdefault((trial["case"], trial["who"]), {"case": trial["case"],
                                                              "who": trial["who"], "values": {}})
        for key, value in trial.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "rep":
                row["values"].setdefault(key, []).append(value)
            elif key in ("error", "exact", "on_device", "cache"):
                row.setdefault(key, set()).add(str(value))
    for row in rows.values():
        row["median"] = {k: statistics.median(v) for k, v in row["values"].items()}
        row["min"] = {k: min(v) for k, v in row["values"].items()}
        for key in ("error", "exact", "on_device", "cache"):
            if key in row:
                row[key] = sorted(row[key])
    return list(rows.values())


def _median(rows: list[dict[str, Any]], case: str, who: str, key: str) -> float | None:
    for row in rows:
        if row["case"] == case and row["who"] == who:
            return row["median"].get(key)
    return None


def targets(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    copy_s = _median(rows, "device_to_host", "jax.device_get", "seconds")
    blocked = _median(rows, "async_save", "jaxpoint", "blocked_s")
    if copy_s and blocked:
        ratio = blocked / copy_s
        lines.append(f"async save blocks {blocked * 1e3:.0f} ms = {ratio:.2f}x a plain device-to-host "
                     f"copy ({copy_s * 1e3:.0f} ms); target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'}")
    for mode in ("cold", "warm"):
        base = _median(rows, f"restore_{mode}", "np.fromfile+device_put", "seconds")
        ours = _median(rows, f"restore_{mode}", "jaxpoint", "seconds")
        if base and ours:
            speed = base / ours
            lines.append(f"{mode} restore to device runs at {speed:.2f}x the speed of reading the "
                         f"bytes plus copying them ({ours:.2f} s vs {base:.2f} s); target >= 0.8x: "
                         f"{'met' if speed >= 0.8 else 'NOT met'}")
    return lines


def markdown(info: dict[str, Any], rows: list[dict[str, Any]], skipped: list[str]) -> str:
    out = [f"Device: {info['device_kind']} ({info['platform']}; pinned host memory: "
           f"{info['pinned_host']}); host: {info['machine']['cpu_model']}, "
           f"{info['machine']['nproc']} CPUs, {info['machine']['memory_gib']} GiB; scratch "
           f"{info['machine']['filesystem']}; {info['machine']['date']}; state "
           f"{info['state_gib']:.2f} GiB in {info['leaves']} float32 leaves; versions "
           + ", ".join(f"{k} {v}" for k, v in info["machine"]["versions"].items()), "",
           "| case | who | median s | min s | median GB/s | peak RSS / state | notes |",
           "|---|---|---|---|---|---|---|"]
    for row in rows:
        med, low = row["median"], row["min"]
        seconds_key = "blocked_s" if "blocked_s" in med else "seconds"
        rate = med.get("gb_s", med.get("durable_gb_s"))
        notes = []
        if "durable_s" in med:
            notes.append(f"durable after {med['durable_s']:.2f} s ({med['durable_gb_s']:.2f} GB/s)")
        for key in ("exact", "on_device", "cache", "error"):
            if key in row:
                notes.append(f"{key}: {', '.join(row[key])}")
        peak = med.get("peak_over_state")
        cells = [row["case"], row["who"], f"{med.get(seconds_key, float('nan')):.3f}",
                 f"{low.get(seconds_key, float('nan')):.3f}", "" if rate is None else f"{rate:.2f}",
                 "" if peak is None else f"{peak:.2f}", "; ".join(notes)]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", *[f"- {line}" for line in targets(rows)]]
    if skipped:
        out.append(f"- skipped for lack of time: {', '.join(skipped)}")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--leaves", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--directory", default="/var/tmp/jaxpoint-gpu-bench")
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="start no new trial after this many seconds")
    parser.add_argument("--read-ahead-mib", default="2048,4096",
                        help="extra jaxpoint restores with these read-ahead bounds")
    parser.add_argument("--chunk-mib", type=int, default=8,
                        help="extra jaxpoint save and restore with chunks of this size (0: none)")
    parser.add_argument("--out", default="benchmarks/results/gpu")
    args = parser.parse_args()
    jax = _jax()
    run = Run(args.budget_s)
    device = jax.devices()[0]
    libraries = [name for name in args.libraries.split(",") if name]
    windows = [int(w) for w in args.read_ahead_mib.split(",") if w] if "jaxpoint" in libraries else []
    chunked = os.path.join(args.directory, "jaxpoint-chunked")
    shutil.rmtree(args.directory, ignore_errors=True)
    os.makedirs(args.directory)
    state = DeviceState(int(args.gib * 2**30), args.leaves, device)
    info = {"device_kind": device.device_kind, "platform": device.platform,
            "state_gib": state.nbytes / 2**30, "leaves": args.leaves,
            "machine": machine.describe(repo=".", scratch=args.directory),
            "pinned_host": pinned_probe(device)}
    print(json.dumps(info, indent=1), flush=True)
    state.make(0)  # compile and warm the allocator outside every timing
    for rep in range(args.reps):
        run.record("device_to_host", "jax.device_get", rep, device_to_host, state, 10 + rep)
    for rep in range(args.reps):
        for library in libraries:
            directory = os.path.join(args.directory, f"{library}-{rep}")
            run.record("async_save", library, rep, async_save, state, library, directory, 100 + rep)
            if rep > 0:  # the restores read repetition 0; the disk holds few copies
                shutil.rmtree(directory, ignore_errors=True)
        if args.chunk_mib and "jaxpoint" in libraries:
            directory = f"{chunked}-{rep}"
            run.record("async_save", f"jaxpoint, {args.chunk_mib} MiB chunks", rep, chunked_save,
                       state, directory, 100 + rep, args.chunk_mib)
            if rep > 0:
                shutil.rmtree(directory, ignore_errors=True)
    raw = os.path.join(args.directory, "raw")
    host = write_raw(state, raw, 100)
    for rep in range(args.reps):
        run.record("host_to_device", "jax.device_put", rep, host_to_device, state, host)
    del host
    for mode in ("cold", "warm"):
        for rep in range(args.reps):
            run.record(f"restore_{mode}", "read (8 threads)", rep, read_only, raw, state, mode)
            run.record(f"restore_{mode}", "np.fromfile+device_put", rep, read_then_put, state, raw, mode)
            for library in libraries:
                directory = os.path.join(args.directory, f"{library}-0")
                run.record(f"restore_{mode}", library, rep,
                           library_restore, state, library, directory, 100, mode)
            for window in windows:
                run.record(f"restore_{mode}", f"jaxpoint, read-ahead {window} MiB", rep,
                           jaxpoint_tuned, state, os.path.join(args.directory, "jaxpoint-0"),
                           window, mode)
            if args.chunk_mib and "jaxpoint" in libraries:
                run.record(f"restore_{mode}", f"jaxpoint, {args.chunk_mib} MiB chunks", rep,
                           library_restore, state, "jaxpoint", f"{chunked}-0", 100, mode)
    rows = summarize(run.trials)
    report = markdown(info, rows, run.skipped)
    print("\n" + report, flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu.json"), "w") as file:
        json.dump({"info": info, "trials": run.trials, "rows": rows, "skipped": run.skipped},
                  file, indent=1, default=str)
    with open(os.path.join(args.out, "gpu.md"), "w") as file:
        file.write(report)
    shutil.rmtree(args.directory, ignore_errors=True)


if __name__ == "__main__":
    main()
