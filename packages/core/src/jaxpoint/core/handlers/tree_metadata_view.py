"""What `metadata(path)` returns for a tree item: shapes, dtypes and saved shardings.

Built from the files alone (tree metadata and each array's zarr header), so it works on
any number of devices and never reads array data. The shapes are Orbax's: a
`TreeMetadata` (`.tree`, `.custom_metadata`, indexed like the tree itself) whose leaves
are `ArrayMetadata` (`.shape`, `.dtype`, `.sharding` as `ShardingMetadata`, `.storage`),
`ScalarMetadata` and `StringMetadata`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jaxpoint.core.handlers.custom_leaves import describe_custom
from jaxpoint.core.handlers.pytree_metadata import (
    EMPTY_TYPES,
    KNOWN_VALUE_TYPES,
    PLACEHOLDER_TYPE,
    STRING,
    TreeRecord,
    empty_value,
)
from jaxpoint.core.handlers.sharding_metadata import ShardingMetadata
from jaxpoint.core.handlers.type_registry import GLOBAL_TYPE_HANDLER_REGISTRY
from jaxpoint.core.storage import Location, open_arrays
from jaxpoint.core.tree.build import build_tree
from jaxpoint.core.tree.placeholder import PLACEHOLDER


@dataclasses.dataclass(frozen=True, kw_only=True)
class StorageMetadata:
    """How an array is stored: its chunk shape and the shard shape that was written."""

    chunk_shape: tuple[int, ...] | None
    write_shape: tuple[int, ...] | None = None


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
    def sharding(self) -> ShardingMetadata | None:
        """The saved sharding (`.to_jax_sharding()` rebuilds it), None if none was saved."""
        return ShardingMetadata.from_description(self.sharding_description)

    @property
    def storage(self) -> StorageMetadata:
        return StorageMetadata(chunk_shape=self.chunk_shape, write_shape=self.write_shape)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScalarMetadata(ArrayMetadata):
    """A stored Python or numpy scalar."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StringMetadata:
    name: str
    value_type: str = STRING


@jax.tree_util.register_pytree_with_keys_class
class TreeMetadata:
    """The metadata of a tree item: `.tree` (leaf metadata in the saved structure) and
    `.custom_metadata`. It maps and indexes like `.tree` (`meta["params"]["w"].shape`), and
    `jax.tree.map` over it keeps the saved key paths, so the result can be a restore target.
    """

    def __init__(self, *, tree: Any, custom_metadata: Any = None) -> None:
        self._tree = tree
        self._custom_metadata = custom_metadata

    @property
    def tree(self) -> Any:
        return self._tree

    @property
    def custom_metadata(self) -> Any:
        return self._custom_metadata

    def _top(self) -> list[tuple[Any, Any]]:
        if isinstance(self._tree, dict):
            return [(jax.tree_util.DictKey(k), v) for k, v in self._tree.items()]
        if isinstance(self._tree, list | tuple):
            return [(jax.tree_util.SequenceKey(i), v) for i, v in enumerate(self._tree)]
        return [(jax.tree_util.GetAttrKey("tree"), self._tree)]

    def tree_flatten_with_keys(self) -> tuple[list[tuple[Any, Any]], Any]:
        top = self._top()
        return top, (type(self._tree), tuple(k for k, _ in top), self._custom_metadata)

    @classmethod
    def tree_unflatten(cls, aux: Any, children: Any) -> TreeMetadata:
        kind, keys, custom = aux
        if issubclass(kind, dict):
            tree: Any = {key.key: child for key, child in zip(keys, children, strict=True)}
        elif issubclass(kind, list | tuple):
            tree = kind(children)
        else:
            (tree,) = children
        return cls(tree=tree, custom_metadata=custom)

    def __getitem__(self, key: Any) -> Any:
        return self._tree[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._tree

    def __len__(self) -> int:
        return len(self._tree)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._tree)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._tree.get(key, default) if isinstance(self._tree, dict) else default

    def keys(self) -> Any:
        return self._tree.keys()

    def values(self) -> Any:
        return self._tree.values()

    def items(self) -> Any:
        return self._tree.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TreeMetadata):
            return (self._tree, self._custom_metadata) == (other._tree, other._custom_metadata)
        return self._tree == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TreeMetadata(tree={self._tree!r}, custom_metadata={self._custom_metadata!r})"


def _describe_custom_leaves(item: Location, record: TreeRecord) -> dict[str, Any]:
    """Metadata of leaves written by custom TypeHandlers, from each handler's `metadata`."""
    custom = [leaf for leaf in record.leaves if leaf.value_type not in KNOWN_VALUE_TYPES]
    if not custom:
        return {}
    requests = [(leaf.path, GLOBAL_TYPE_HANDLER_REGISTRY.get(leaf.value_type)) for leaf in custom]
    described = describe_custom(item, requests, use_ocdbt=record.use_ocdbt,
                                use_zarr3=record.use_zarr3)
    return {leaf.path.param_name: value for leaf, value in zip(custom, described, strict=True)}


def describe_tree(item: Location, record: TreeRecord, shardings: Any) -> TreeMetadata:
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
            value = empty_value(leaf.value_type)
        elif leaf.value_type == STRING:
            value = StringMetadata(name=name)
        elif leaf.value_type == PLACEHOLDER_TYPE:
            value = PLACEHOLDER
        else:
            value = by_name[name]
        entries.append((leaf.path, value))
    return TreeMetadata(tree=build_tree(entries), custom_metadata=record.custom_metadata)
