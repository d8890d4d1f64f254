"""What this machine can do without a checkpoint library, measured in the same run.

- raw_write: every leaf's bytes written to its own file and fsync'd, 8 files at a time.
- raw_read: every file of a library's checkpoint read by 8 threads into reused buffers.
- np_save / np_load: `np.save` (then fsync) and `np.load` of the same arrays, one after
  another, as a plain user would.

These trials never import jax.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from benchmarks import cache, state
from benchmarks.memory import PeakProbe

Result = dict[str, Any]


def _file_name(leaf: state.LeafSpec) -> str:
    return "__".join(leaf.path)


def _write_fully(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _timed_write(spec: dict[str, Any], write_leaf: Callable[[str, np.ndarray], None], *,
                 threads: int = 1) -> Result:
    state_spec = state.StateSpec.from_json(spec["state"])
    directory = spec["directory"]
    os.makedirs(directory, exist_ok=True)
    arrays = state.build_numpy(state_spec)
    gc.collect()
    cache_method = cache.drop()
    probe = PeakProbe.start()
    start = time.perf_counter()
    paths = [os.path.join(directory, _file_name(leaf)) for leaf, _ in arrays]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write_leaf, paths, [array for _, array in arrays]))
    _fsync_directory(directory)
    seconds = time.perf_counter() - start
    peak = probe.peak_above_baseline_bytes()
    metrics = {"seconds": seconds, "peak_above_baseline_bytes": peak,
               "peak_over_state": peak / state.state_bytes(state_spec)}
    return {"metrics": metrics, "info": {"cache": cache_method, "memory": probe.method}}


def _raw_write_leaf(path: str, array: np.ndarray) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_fully(fd, memoryview(array).cast("B"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _np_save_leaf(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as file:
        np.save(file, array)
        file.flush()
        os.fsync(file.fileno())


def raw_write(spec: dict[str, Any]) -> Result:
    return _timed_write(spec, _raw_write_leaf, threads=cache.IO_THREADS)


def np_save(spec: dict[str, Any]) -> Result:
    return _timed_write(spec, _np_save_leaf)


def _prepare_cache(spec: dict[str, Any]) -> str:
    if spec["cache"] == "cold":
        return cache.drop([spec["directory"]])
    cache.warm([spec["directory"]])
    return "warm (files read once)"


def raw_read(spec: dict[str, Any]) -> Result:
    paths = cache.files_under([spec["directory"]])
    cache_method = _prepare_cache(spec)
    start = time.perf_counter()
    file_bytes = cache.read_all(paths)
    seconds = time.perf_counter() - start
    return {"metrics": {"seconds": seconds, "file_bytes": file_bytes},
            "info": {"cache": cache_method, "files": len(paths)}}


def np_load(spec: dict[str, Any]) -> Result:
    state_spec = state.StateSpec.from_json(spec["state"])
    leaves = state.leaf_specs(state_spec)
    pool = state.value_pool()
    gc.collect()
    cache_method = _prepare_cache(spec)
    probe = PeakProbe.start()
    start = time.perf_counter()
    arrays = [np.load(os.path.join(spec["directory"], _file_name(leaf))) for leaf in leaves]
    seconds = time.perf_counter() - start
    peak = probe.peak_above_baseline_bytes()
    for leaf, array in zip(leaves, arrays, strict=True):
        # np.save stores extension dtypes such as bfloat16 as raw void bytes.
        state.check_leaf(leaf, array if array.dtype == leaf.dtype else array.view(leaf.dtype), pool)
    metrics = {"seconds": seconds, "peak_above_baseline_bytes": peak,
               "peak_over_state": peak / state.state_bytes(state_spec)}
    return {"metrics": metrics, "info": {"cache": cache_method, "memory": probe.method}}


OPERATIONS = {
    "raw_write": raw_write,
    "np_save": np_save,
    "raw_read": raw_read,
    "np_load": np_load,
}
