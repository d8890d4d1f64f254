"""The deterministic training state of a step, shared by the crash child and the checks.

`host_state(step)` is pure numpy, so the parent can recompute exactly what the child
saved at any step and compare a restore bit for bit. `device_state(step)` places the
same values on the 8 virtual CPU devices the way a training job would (a sharded
weight, a replicated bias) and keeps the host-only leaves as numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SEED = 20240611
MESH_AXIS = "x"


def host_state(step: int) -> dict[str, Any]:
    """Leaves of `step` as numpy: f32 (sharded when on devices), bf16, f64, int32, int."""
    import ml_dtypes

    rng = np.random.default_rng([SEED, step])
    return {
        "params": {
            "w": rng.standard_normal((256, 1024), dtype=np.float32),
            "b": rng.standard_normal(1024, dtype=np.float32).astype(ml_dtypes.bfloat16),
        },
        "opt": {"mu": rng.standard_normal((64, 256))},
        "tokens": rng.integers(-(2**31), 2**31 - 1, size=4096, dtype=np.int32),
        "step": int(step),
    }


def device_state(step: int) -> dict[str, Any]:
    """`host_state(step)` with `w` sharded over all devices and `b` replicated."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    state = host_state(step)
    mesh = Mesh(np.array(jax.devices()), (MESH_AXIS,))
    params = state["params"]
    params["w"] = jax.device_put(params["w"], NamedSharding(mesh, PartitionSpec(MESH_AXIS)))
    params["b"] = jax.device_put(params["b"], NamedSharding(mesh, PartitionSpec()))
    return state


def mismatches(restored: Any, step: int) -> list[str]:
    """Leaf paths where `restored` differs from `host_state(step)` in dtype, shape or bits."""
    expected = _flatten(host_state(step))
    found = _flatten(restored)
    problems = []
    if sorted(found) != sorted(expected):
        problems.append(f"tree paths {sorted(found)} != expected {sorted(expected)}")
    for path, want in expected.items():
        if path not in found:
            continue
        got = found[path]
        if isinstance(want, int):
            if not isinstance(got, int | np.integer) or int(got) != want:
                problems.append(f"{path}: expected {want}, got {got!r}")
            continue
        got = np.asarray(got)
        if got.dtype != want.dtype or got.shape != want.shape:
            problems.append(f"{path}: expected {want.dtype}{want.shape}, got {got.dtype}{got.shape}")
        elif got.tobytes() != want.tobytes():
            problems.append(f"{path}: bytes differ")
    return problems


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
        return flat
    return {prefix: tree}
