"""Python scalars in a checkpoint restored as the target asks.

`TrainState.step` is a Python int until the first jitted step, so a checkpoint may hold a
Python scalar where the target (from `jax.eval_shape`) asks for an int32 array, or the
other way round. The core restores a Python-int target from an array already; this module
covers the other direction by restoring the scalar as saved and casting it afterwards.

TODO(restore-path): once the core casts to the target's dtype on restore, the cast here
reduces to the Python-scalar case only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxpoint.core.handlers import ScalarMetadata
from jaxpoint.optax_adapter import leaf_path


def scalar_aware_target(saved: Any, target: Any) -> tuple[Any, Callable[[Any], Any]]:
    """`target` with a Python scalar wherever `saved` holds one and the target an array.

    Returns the target to restore onto and the function that turns the restored tree
    into what the original target asked for (arrays of its dtype and sharding).
    """
    stored = {leaf_path(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(
        saved, is_leaf=lambda node: isinstance(node, ScalarMetadata))[0]}
    flat, treedef = jax.tree_util.tree_flatten_with_path(target)
    casts: dict[int, Any] = {}
    leaves = []
    for index, (path, leaf) in enumerate(flat):
        meta = stored.get(leaf_path(path))
        if isinstance(meta, ScalarMetadata) and _is_array_like(leaf) and leaf.shape == ():
            casts[index] = leaf
            leaves.append(meta.dtype.type(0).item())
        else:
            leaves.append(leaf)
    if not casts:
        return target, lambda restored: restored

    def finish(restored: Any) -> Any:
        values = treedef.flatten_up_to(restored)
        for index, wanted in casts.items():
            value = jnp.asarray(values[index], dtype=wanted.dtype)
            sharding = getattr(wanted, "sharding", None)
            values[index] = jax.device_put(value, sharding) if sharding is not None else value
        return jax.tree_util.tree_unflatten(treedef, values)

    return jax.tree_util.tree_unflatten(treedef, leaves), finish


def _is_array_like(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | jax.ShapeDtypeStruct)
