"""Abstract leaves: `jax.ShapeDtypeStruct`s standing for arrays, and leaves' parameter names."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jaxpoint.core.tree.flatten import is_empty_node
from jaxpoint.core.tree.keys import path_from_jax

_SCALARS = (int, float, complex, bool, np.number, np.bool_)


def to_shape_dtype_struct(arr: Any, dtype: Any = None, scalar_dtype: type | None = None,
                          support_format: bool = False) -> Any:
    """The `jax.ShapeDtypeStruct` of an array-like leaf (keeping its sharding); scalars stay.

    Accepts jax.Array, np.ndarray, ShapeDtypeStruct and anything with `shape` (or
    `global_shape`), `dtype` and `sharding`, e.g. ArrayRestoreArgs or array metadata.
    A random key array becomes its key data's struct. `scalar_dtype` converts scalars.
    """
    if isinstance(arr, jax.Array) and jax.dtypes.issubdtype(arr.dtype, jax.dtypes.prng_key):
        arr = jax.random.key_data(arr)
    if isinstance(arr, _SCALARS):
        return scalar_dtype(arr) if scalar_dtype is not None else arr
    shape = getattr(arr, "global_shape", None) or getattr(arr, "shape", None)
    if shape is None or getattr(arr, "dtype", None) is None and dtype is None:
        raise TypeError(
            f"Expected an array-like leaf with shape and dtype, got {type(arr).__name__}. To "
            "fix, pass a jax.Array, np.ndarray, jax.ShapeDtypeStruct or a scalar."
        )
    dtype = dtype if dtype is not None else arr.dtype
    if isinstance(arr, np.ndarray):
        return jax.ShapeDtypeStruct(tuple(shape), dtype)
    sharding = getattr(arr, "sharding", None)
    to_jax = getattr(sharding, "to_jax_sharding", None)
    if callable(to_jax):  # sharding metadata read from a checkpoint
        sharding = to_jax()
    if not isinstance(sharding, jax.sharding.Sharding):
        sharding = None
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def get_param_names(item: Any, *, include_empty_nodes: bool = True) -> Any:
    """A tree like `item` whose leaves are their stored parameter names (`"params.w"`)."""
    return jax.tree_util.tree_map_with_path(
        lambda key_path, _: path_from_jax(key_path).param_name, item,
        is_leaf=is_empty_node if include_empty_nodes else None)
