"""What `metadata(path)` returns for a tree item: shapes, dtypes and saved shardings.

Built from the files alone (tree metadata and each array's zarr header), so it works on
any number of devices and never reads array data.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from jaxpoint.core.handlers.custom_leaves import describe_custom
from jaxpoint.core.handlers.pytree_metadata import (
    EMPTY_TYPES,
    KNOWN_VALUE_TYPES,
    STRING,
    TreeRecord,
)
from jaxpoint.core.handlers.sharding_metadata import sharding_from_description
from jaxpoint.core.handlers.type_registry import GLOBAL_TYPE_HANDLER_REGISTRY
from jaxpoint.core.storage import Location, open_arrays
from jaxpoint.core.tree import build_tree


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArrayMetadata:
    """A stored array: `shape`, `dtype`, the saved sharding's description and chunking."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    value_type: str
    write_shape: tuple[int, ...] | None = None
    chunk_shape: tuple[int, ...] | None = None
    sharding_description: dict[str, Any] | None = None

    @property
    def sharding(self) -> Any:
        """The saved sharding rebuilt on this host's devices, or None if they differ."""
        return sharding_from_description(self.sharding_description)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScalarMetadata(ArrayMetadata):
    """A stored Python or numpy scalar."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StringMetadata:
    name: str
    value_type: str = STRING


def _describe_custom_leaves(item: Location, record: TreeRecord) -> dict[str, Any]:
    """Metadata of leaves written by custom TypeHandlers, from each handler's `metadata`."""
    custom = [leaf for leaf in record.leaves if leaf.value_type not in KNOWN_VALUE_TYPES]
    if not custom:
        return {}
    requests = [(leaf.path, GLOBAL_TYPE_HANDLER_REGISTRY.get(leaf.value_type)) for leaf in custom]
    described = describe_custom(item, requests, use_ocdbt=record.use_ocdbt,
                                use_zarr3=record.use_zarr3)
    return {leaf.path.param_name: value for leaf, value in zip(custom, described, strict=True)}


def describe_tree(item: Location, record: TreeRecord, shardings: dict[str, dict[str, Any]]) -> Any:
    arrays = [leaf for leaf in record.leaves if leaf.is_array]
    stores = open_arrays(item, [leaf.path.param_name for leaf in arrays],
                         use_ocdbt=record.use_ocdbt, use_zarr3=record.use_zarr3)
    by_name = {}
    for leaf, store in zip(arrays, stores, strict=True):
        name = leaf.path.param_name
        cls = ScalarMetadata if leaf.value_type == "scalar" else ArrayMetadata
        by_name[name] = cls(
            name=name, shape=store.shape, dtype=store.dtype,
            value_type=leaf.value_type, write_shape=leaf.write_shape,
            chunk_shape=store.chunk_shape or None, sharding_description=shardings.get(name))
    by_name.update(_describe_custom_leaves(item, record))
    entries = []
    for leaf in record.leaves:
        name = leaf.path.param_name
        if leaf.value_type in EMPTY_TYPES:
            value = EMPTY_TYPES[leaf.value_type]() if EMPTY_TYPES[leaf.value_type] else None
        elif leaf.value_type == STRING:
            value = StringMetadata(name=name)
        else:
            value = by_name[name]
        entries.append((leaf.path, value))
    return build_tree(entries)
