"""Library operations, run inside a fresh trial process with the library imported as `ocp`.

The code is identical for every library; `flavors` holds the one configuration switch.
Each operation returns metrics (seconds, bytes, 0/1 flags) and free-form info.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from benchmarks import cache, flavors, state
from benchmarks.memory import PeakProbe, rss_bytes

Result = dict[str, Any]


def _jax():
    import jax

    return jax


def _device_tree(spec: state.StateSpec, pool: np.ndarray) -> tuple[Any, list[state.LeafSpec]]:
    jax = _jax()
    leaves = state.leaf_specs(spec)
    tree = state.nest((leaf.path, jax.device_put(state.build_leaf(leaf, pool))) for leaf in leaves)
    jax.block_until_ready(tree)
    return tree, leaves


def _abstract_tree(leaves: list[state.LeafSpec]) -> Any:
    jax = _jax()
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return state.nest(
        (leaf.path, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding))
        for leaf in leaves)


def _check_tree(tree: Any, leaves: list[state.LeafSpec], pool: np.ndarray) -> None:
    for leaf in leaves:
        state.check_leaf(leaf, np.asarray(state.get(tree, leaf.path)), pool)


def _memory_metrics(probe: PeakProbe, num_bytes: int) -> Result:
    peak = probe.peak_above_baseline_bytes()
    return {"peak_above_baseline_bytes": peak, "peak_over_state": peak / num_bytes}


def save(spec: dict[str, Any]) -> Result:
    """Durable synchronous save: save(), wait_until_finished(), then fsync of every file."""
    flavor = flavors.FLAVORS[spec["flavor"]]
    ocp = flavors.import_library(flavor)
    state_spec = state.StateSpec.from_json(spec["state"])
    tree, _ = _device_tree(state_spec, state.value_pool())
    manager = flavors.manager(ocp, flavor, spec["directory"], is_async=False)
    args = flavors.save_args(ocp, flavor, tree)
    gc.collect()
    cache_method = cache.drop()
    probe = PeakProbe.start()
    start = time.perf_counter()
    manager.save(0, args=args)
    manager.wait_until_finished()
    saved = time.perf_counter()
    fsync_s = cache.fsync_tree(spec["directory"])
    durable = time.perf_counter()
    metrics = {"seconds": durable - start, "save_s": saved - start, "fsync_tail_s": fsync_s,
               **_memory_metrics(probe, state.state_bytes(state_spec))}
    manager.close()
    return {"metrics": metrics, "info": {"cache": cache_method, "memory": probe.method}}


def restore(spec: dict[str, Any]) -> Result:
    """Restore onto an abstract target of jax.ShapeDtypeStruct, from a cold or warm cache."""
    flavor = flavors.FLAVORS[spec["flavor"]]
    ocp = flavors.import_library(flavor)
    state_spec = state.StateSpec.from_json(spec["state"])
    pool = state.value_pool()
    leaves = state.leaf_specs(state_spec)
    manager = flavors.manager(ocp, flavor, spec["directory"], is_async=False)
    args = flavors.restore_args(ocp, flavor, _abstract_tree(leaves))
    gc.collect()
    cache_method = _prepare_cache(spec)
    probe = PeakProbe.start()
    start = time.perf_counter()
    restored = manager.restore(0, args=args)
    _jax().block_until_ready(restored)
    seconds = time.perf_counter() - start
    metrics = {"seconds": seconds, **_memory_metrics(probe, state.state_bytes(state_spec))}
    _check_tree(restored, leaves, pool)
    manager.close()
    return {"metrics": metrics, "info": {"cache": cache_method, "memory": probe.method}}


def _prepare_cache(spec: dict[str, Any]) -> str:
    directories = [spec["directory"]]
    if spec["cache"] == "cold":
        return cache.drop(directories)
    cache.warm(directories)
    return "warm (files read once)"


def async_save(spec: dict[str, Any]) -> Result:
    """Async save: how long save() blocks, then the total until wait_until_finished()."""
    flavor = flavors.FLAVORS[spec["flavor"]]
    ocp = flavors.import_library(flavor)
    state_spec = state.StateSpec.from_json(spec["state"])
    tree, _ = _device_tree(state_spec, state.value_pool())
    manager = flavors.manager(ocp, flavor, spec["directory"], is_async=True)
    args = flavors.save_args(ocp, flavor, tree)
    gc.collect()
    cache_method = cache.drop()
    probe = PeakProbe.start()
    start = time.perf_counter()
    manager.save(0, args=args)
    blocked = time.perf_counter()
    manager.wait_until_finished()
    finished = time.perf_counter()
    cache.fsync_tree(spec["directory"])
    durable = time.perf_counter()
    metrics = {"blocked_s": blocked - start, "seconds": finished - start,
               "durable_s": durable - start,
               **_memory_metrics(probe, state.state_bytes(state_spec))}
    manager.close()
    return {"metrics": metrics, "info": {"cache": cache_method, "memory": probe.method}}


def async_integrity(spec: dict[str, Any]) -> Result:
    """Change the arrays right after an async save() returns; the checkpoint must not change.

    Step 0: jax arrays donated to a jitted function that overwrites them (on CPU the
    donated buffer is reused in place). Step 1: numpy arrays overwritten in place.
    """
    jax = _jax()
    flavor = flavors.FLAVORS[spec["flavor"]]
    ocp = flavors.import_library(flavor)
    state_spec = state.StateSpec.from_json(spec["state"])
    pool = state.value_pool()
    tree, leaves = _device_tree(state_spec, pool)
    manager = flavors.manager(ocp, flavor, spec["directory"], is_async=True)
    overwrite = jax.jit(lambda t: jax.tree.map(lambda x: x * 0 - 7, t), donate_argnums=0)
    donated_leaf = state.get(tree, leaves[0].path)
    errors: dict[str, str] = {}

    manager.save(0, args=flavors.save_args(ocp, flavor, tree))
    jax.block_until_ready(overwrite(tree))
    is_donated = donated_leaf.is_deleted()
    del tree, donated_leaf
    _finish(manager, "donated", errors)

    numpy_tree = state.nest((leaf.path, state.build_leaf(leaf, pool)) for leaf in leaves)
    manager.save(1, args=flavors.save_args(ocp, flavor, numpy_tree))
    for leaf in leaves:
        state.get(numpy_tree, leaf.path)[...] = -7
    _finish(manager, "mutated", errors)

    for step, name in ((0, "donated"), (1, "mutated")):
        if name not in errors:
            _check_restore(ocp, flavor, manager, step, leaves, pool, name, errors)
    manager.close()
    metrics = {"donated_ok": int("donated" not in errors),
               "mutated_ok": int("mutated" not in errors),
               "donation_reused_buffer": int(is_donated)}
    return {"metrics": metrics, "info": {"errors": errors}}


def _finish(manager: Any, name: str, errors: dict[str, str]) -> None:
    try:
        manager.wait_until_finished()
    except Exception as error:  # any failure of the save is the finding
        errors[name] = f"save failed: {type(error).__name__}: {error}"


def _check_restore(ocp: Any, flavor: flavors.Flavor, manager: Any, step: int,
                   leaves: list[state.LeafSpec], pool: np.ndarray, name: str,
                   errors: dict[str, str]) -> None:
    try:
        args = flavors.restore_args(ocp, flavor, _abstract_tree(leaves))
        restored = manager.restore(step, args=args)
        _check_tree(restored, leaves, pool)
    except Exception as error:  # a wrong or unreadable checkpoint is the finding
        errors[name] = f"{type(error).__name__}: {error}"


def rss_flat(spec: dict[str, Any]) -> Result:
    """N consecutive async saves with max_to_keep=3 while the state keeps changing."""
    jax = _jax()
    flavor = flavors.FLAVORS[spec["flavor"]]
    ocp = flavors.import_library(flavor)
    state_spec = state.StateSpec.from_json(spec["state"])
    tree, _ = _device_tree(state_spec, state.value_pool())
    manager = flavors.manager(ocp, flavor, spec["directory"], is_async=True, max_to_keep=3)
    step_fn = jax.jit(lambda t: jax.tree.map(lambda x: x + 1, t))
    saves = int(spec["saves"])
    gc.collect()
    probe = PeakProbe.start()
    samples = []
    start = time.perf_counter()
    for step in range(saves):
        manager.save(step, args=flavors.save_args(ocp, flavor, tree))
        tree = jax.block_until_ready(step_fn(tree))
        samples.append(rss_bytes())
    manager.wait_until_finished()
    seconds = time.perf_counter() - start
    kept = list(manager.all_steps())
    manager.close()
    return {"metrics": {"seconds": seconds, **_rss_trend(samples, probe.baseline_bytes),
                        **_memory_metrics(probe, state.state_bytes(state_spec))},
            "info": {"kept_steps": kept, "rss_mib": [round(s / 2**20, 1) for s in samples]}}


def _rss_trend(samples: list[int], baseline: int) -> Result:
    # The first saves allocate pools and threads; judge flatness on the second half.
    half = samples[len(samples) // 2:]
    slope = float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) > 1 else 0.0
    return {"rss_growth_per_save_mib": slope / 2**20,
            "rss_second_half_growth_mib": (half[-1] - half[0]) / 2**20,
            "rss_end_above_baseline_mib": (samples[-1] - baseline) / 2**20}


OPERATIONS = {
    "save": save,
    "restore": restore,
    "async_save": async_save,
    "async_integrity": async_integrity,
    "rss_flat": rss_flat,
}
