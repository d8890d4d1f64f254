"""Per-leaf restore args built from a target tree (Orbax's `construct_restore_args`)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jaxpoint.core.errors import UnsupportedLeafError
from jaxpoint.core.handlers.leaf_args import ArrayRestoreArgs, RestoreArgs
from jaxpoint.core.handlers.tree_metadata_view import (
    ArrayMetadata,
    ScalarMetadata,
    StringMetadata,
    TreeMetadata,
)

_PYTHON_SCALARS = (int, float)


def _key_data(value: Any) -> Any:
    # A random key restores from its key data; the stored key impl rewraps it.
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(value)
    return value


def _sharding_of(value: Any) -> jax.sharding.Sharding | None:
    sharding = getattr(value, "sharding", None)
    return sharding if isinstance(sharding, jax.sharding.Sharding) else None


def _python_type(dtype: np.dtype) -> type:
    kind = np.dtype(dtype).kind
    return {"b": bool, "i": int, "u": int, "f": float, "c": complex}.get(kind, float)


def construct_restore_args(target: Any, sharding_tree: Any = None, set_global_shape: bool = True,
                           support_layout: bool = False, strict: bool = True) -> Any:
    """A tree like `target` of `ArrayRestoreArgs` (jax leaves) and `RestoreArgs` (the rest).

    `target` may hold jax.Arrays, `jax.ShapeDtypeStruct`s, numpy arrays, Python scalars,
    strings or metadata entries. `sharding_tree` (same structure) overrides the targets'
    shardings; a ShapeDtypeStruct without a sharding restores as np.ndarray.
    `set_global_shape` records each array's shape; `strict=False` allows padding/slicing.
    `support_layout` is accepted for Orbax's signature; layouts are never restored here.
    """
    if support_layout:
        raise UnsupportedLeafError(
            "construct_restore_args(support_layout=True) asks for device layouts, which "
            "jaxpoint does not restore. Expected support_layout=False. To fix, drop the "
            "argument; arrays restore with the default layout."
        )

    def array_args(value: Any, sharding: Any, dtype: Any) -> ArrayRestoreArgs:
        shape = tuple(value.shape) if set_global_shape else None
        return ArrayRestoreArgs(restore_type=jax.Array, sharding=sharding, global_shape=shape,
                                dtype=dtype, strict=strict)

    def leaf_args(value: Any, sharding: Any) -> RestoreArgs:
        if isinstance(value, jax.ShapeDtypeStruct | ArrayMetadata) and not isinstance(
                value, ScalarMetadata):
            if sharding is None:
                return RestoreArgs(restore_type=np.ndarray, dtype=value.dtype)
            return array_args(value, sharding, value.dtype)
        if isinstance(value, ScalarMetadata):
            return RestoreArgs(restore_type=_python_type(value.dtype), dtype=value.dtype)
        if isinstance(value, StringMetadata | str):
            return RestoreArgs(restore_type=str)
        if isinstance(value, jax.Array):
            return array_args(value, sharding, value.dtype)
        if isinstance(value, np.ndarray):
            return RestoreArgs(restore_type=np.ndarray, dtype=value.dtype)
        if isinstance(value, _PYTHON_SCALARS):
            return RestoreArgs(restore_type=type(value))
        raise UnsupportedLeafError(
            f"Expected a jax.Array, jax.ShapeDtypeStruct, np.ndarray, int, float, str or "
            f"metadata leaf in the target of construct_restore_args, got "
            f"{type(value).__qualname__}. To fix, convert the leaf (e.g. np.asarray) or build "
            "its RestoreArgs yourself."
        )

    if isinstance(target, TreeMetadata):  # metadata(path).item_metadata, as Orbax allows
        target = target.tree
    target = jax.tree.map(_key_data, target)
    if sharding_tree is None:
        sharding_tree = jax.tree.map(_sharding_of, target)
    return jax.tree.map(leaf_args, target, sharding_tree)
