"""Per-leaf options for saving and restoring arrays (orbax's SaveArgs / RestoreArgs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jaxpoint.core.errors import InvalidArgumentError


def as_dtype(dtype: Any, *, where: str) -> np.dtype | None:
    """Accepts `jnp.bfloat16`, `np.float32`, `np.dtype(...)` or a name; None stays None."""
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError as error:
        raise InvalidArgumentError(
            f"Expected a dtype at {where}, got {dtype!r}. To fix, pass e.g. jnp.bfloat16 or "
            "np.dtype('float32')."
        ) from error


@dataclasses.dataclass(kw_only=True)
class SaveArgs:
    """How one leaf is saved: cast to `dtype`, split chunks to at most `chunk_byte_size`."""

    dtype: Any = None
    chunk_byte_size: int | None = None
    write_chunk_shape: Sequence[int] | None = None
    aggregate: bool = False

    def __post_init__(self) -> None:
        if self.aggregate:
            raise InvalidArgumentError(
                "Expected SaveArgs(aggregate=False), got aggregate=True. Aggregating leaves "
                "into one msgpack file is not supported here (orbax deprecated it too): every "
                "array is written to TensorStore. To fix, drop aggregate=True."
            )


@dataclasses.dataclass(kw_only=True)
class RestoreArgs:
    """How one leaf is restored: as `restore_type` (np.ndarray, jax.Array, int...), cast to `dtype`."""

    restore_type: Any = None
    dtype: Any = None


@dataclasses.dataclass(kw_only=True)
class ArrayRestoreArgs(RestoreArgs):
    """Restore a leaf as a jax.Array with `sharding` (or `mesh` + `mesh_axes`).

    `global_shape` different from the stored shape pads or truncates when `strict=False`.
    """

    restore_type: Any = jax.Array
    mesh: jax.sharding.Mesh | None = None
    mesh_axes: jax.sharding.PartitionSpec | None = None
    sharding: jax.sharding.Sharding | None = None
    global_shape: tuple[int, ...] | None = None
    shape: tuple[int, ...] | None = None
    strict: bool = True

    def resolved_sharding(self) -> jax.sharding.Sharding | None:
        if self.sharding is not None:
            return self.sharding
        if self.mesh is not None:
            return jax.sharding.NamedSharding(self.mesh, self.mesh_axes or jax.sharding.PartitionSpec())
        return None
