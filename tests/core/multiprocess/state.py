"""The state the multi-process tests save: global values, sharded trees and bit-exact checks.

Every process builds the same global values from a seed and keeps only the shards of its
own devices, as a training job would; checks compare every local shard with the matching
region of the global value, bit for bit, and its sharding with the one asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# name: (shape, dtype, spec on a ("data", "model") mesh). "bias" is replicated along
# "data", whose rows live on different processes; "table" is replicated everywhere.
# Shards of "weights" exceed OCDBT's 1 KiB inline limit, so they live in the data files
# of the process that wrote them; the smaller arrays live inline in the merged B-tree.
ARRAYS: dict[str, tuple[tuple[int, ...], Any, P]] = {
    "weights": ((64, 64), np.float32, P("data", "model")),
    "rows": ((8, 6), np.int32, P("data", None)),
    "bias": ((8,), np.float32, P("model")),
    "table": ((5, 3), jnp.bfloat16, P()),
}
NUMPY_LEAF = "counts"
SCALAR_LEAF = "step"
STRING_LEAF = "name"


def global_value(name: str) -> np.ndarray:
    """The full value of array `name`, the same on every process; -0.0 and NaN included."""
    shape, dtype, _ = ARRAYS[name]
    values = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) * 0.5 - 7.0
    flat = values.reshape(-1)
    flat[0] = -0.0
    if np.dtype(dtype).kind == "f" or dtype is jnp.bfloat16:
        flat[-1] = np.nan
    return values.astype(dtype)


def mesh_of(shape: Sequence[int], names: Sequence[str] = ("data", "model"),
            devices: Sequence[jax.Device] | None = None) -> Mesh:
    chosen = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(chosen).reshape(tuple(shape)), tuple(names))


def sharded(name: str, sharding: jax.sharding.Sharding) -> jax.Array:
    value = global_value(name)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def make_state(mesh: Mesh, specs: dict[str, P] | None = None) -> dict[str, Any]:
    """Arrays sharded over `mesh`, plus a NumPy array, a scalar and a string."""
    specs = specs or {name: spec for name, (_, _, spec) in ARRAYS.items()}
    state: dict[str, Any] = {name: sharded(name, NamedSharding(mesh, spec))
                             for name, spec in specs.items()}
    state[NUMPY_LEAF] = np.array([3, 1, 4], dtype=np.int64)
    state[SCALAR_LEAF] = 42
    state[STRING_LEAF] = "run-7"
    return state


def abstract_state(mesh: Mesh, specs: dict[str, P]) -> dict[str, Any]:
    """A restore target: ShapeDtypeStructs sharded by `specs` over `mesh`."""
    return {name: jax.ShapeDtypeStruct(ARRAYS[name][0], ARRAYS[name][1],
                                       sharding=NamedSharding(mesh, spec))
            for name, spec in specs.items()}


def same_bits(actual: Any, expected: np.ndarray) -> bool:
    actual = np.asarray(actual)
    return (actual.dtype == expected.dtype and actual.shape == expected.shape
            and actual.tobytes() == expected.tobytes())


def check_arrays(restored: dict[str, Any], target: dict[str, Any]) -> dict[str, str]:
    """Compares every array leaf of `target` with `restored`: leaf name -> problem ('' if none)."""
    problems = {}
    for name, wanted in target.items():
        if name not in ARRAYS:
            continue
        array = restored[name]
        problem = ""
        if not isinstance(array, jax.Array):
            problem = f"restored a {type(array).__name__}, not a jax.Array"
        elif not array.sharding.is_equivalent_to(wanted.sharding, len(wanted.shape)):
            problem = f"sharding {array.sharding} instead of {wanted.sharding}"
        else:
            value = global_value(name)
            bad = [shard.index for shard in array.addressable_shards
                   if not same_bits(shard.data, value[shard.index])]
            if bad:
                problem = f"wrong values in shards {bad}"
        problems[name] = problem
    return problems


def check_extras(restored: dict[str, Any]) -> dict[str, str]:
    """Checks the NumPy, scalar and string leaves of a restored `make_state` tree."""
    return {
        NUMPY_LEAF: "" if same_bits(restored[NUMPY_LEAF], np.array([3, 1, 4])) else
        repr(restored[NUMPY_LEAF]),
        SCALAR_LEAF: "" if restored[SCALAR_LEAF] == 42 else repr(restored[SCALAR_LEAF]),
        STRING_LEAF: "" if restored[STRING_LEAF] == "run-7" else repr(restored[STRING_LEAF]),
    }
