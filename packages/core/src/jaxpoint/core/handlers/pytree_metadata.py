"""`_METADATA` of a PyTree item: the tree's paths and each leaf's value type.

The format is orbax's (see docs/format.md). Readers tolerate unknown fields; every field
read is type-checked so a hostile file fails with CorruptCheckpointError.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxpoint.core.errors import CorruptCheckpointError, InvalidNameError
from jaxpoint.core.storage import Location, read_json
from jaxpoint.core.tree.keys import KeyType, TreePath, validate_path

METADATA_FILE = "_METADATA"

JAX_ARRAY = "jax.Array"
NP_ARRAY = "np.ndarray"
SCALAR = "scalar"
STRING = "string"
PLACEHOLDER_TYPE = "placeholder"  # a saved PLACEHOLDER leaf (Orbax writes them): no data
EMPTY_TYPES: dict[str, type[dict[Any, Any]] | type[list[Any]] | type[tuple[Any, ...]] | None] = {
    "None": None, "Dict": dict, "List": list, "Tuple": tuple}


def empty_value(value_type: str) -> Any:
    """The empty node an EMPTY_TYPES value type stands for: None, {}, [] or ()."""
    factory = EMPTY_TYPES[value_type]
    return None if factory is None else factory()

ARRAY_TYPES = (JAX_ARRAY, NP_ARRAY, SCALAR)
# Value types Orbax's own handlers record (jaxpoint reads the ones it supports itself);
# any other one names a custom TypeHandler's typestr.
KNOWN_VALUE_TYPES = frozenset((*ARRAY_TYPES, STRING, *EMPTY_TYPES, "NamedTuple", "Unknown",
                               "placeholder"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeafRecord:
    path: TreePath
    value_type: str
    write_shape: tuple[int, ...] | None = None

    @property
    def is_array(self) -> bool:
        return self.value_type in ARRAY_TYPES


@dataclasses.dataclass(frozen=True, kw_only=True)
class TreeRecord:
    leaves: list[LeafRecord]
    use_ocdbt: bool = True
    use_zarr3: bool = True
    custom_metadata: Any = None
    # `store_array_data_equal_to_fill_value`: every chunk was written, none may be missing.
    has_every_chunk: bool = False


def write_tree_record(item: Location, record: TreeRecord) -> None:
    tree = {}
    for leaf in record.leaves:
        value = {"value_type": leaf.value_type,
                 "skip_deserialize": leaf.value_type in EMPTY_TYPES}
        if leaf.write_shape is not None:
            value["write_shape"] = list(leaf.write_shape)
        tree[leaf.path.metadata_key] = {
            "key_metadata": [{"key": k, "key_type": int(t)}
                             for k, t in zip(leaf.path.keys, leaf.path.key_types, strict=True)],
            "value_metadata": value,
        }
    (item / METADATA_FILE).write_json({
        "tree_metadata": tree,
        "use_ocdbt": record.use_ocdbt,
        "use_zarr3": record.use_zarr3,
        "store_array_data_equal_to_fill_value": True,
        "custom_metadata": record.custom_metadata,
    })


def _corrupt(where: Location, detail: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"Invalid tree metadata in {where / METADATA_FILE}: {detail}.")


_KEY_TYPES = {int(t): t for t in KeyType}


def _leaf_from_json(item: Location, key: str, entry: Any) -> LeafRecord:
    # Runs once per leaf of trees with 100k leaves: plain type checks, no helper calls.
    parts = entry.get("key_metadata") if type(entry) is dict else None
    if type(parts) is not list:
        raise _corrupt(item, f"entry {key!r} lacks a key_metadata list")
    keys, types = [], []
    for part in parts:
        name = part.get("key") if type(part) is dict else None
        if type(name) not in (str, int):
            raise _corrupt(item, f"entry {key!r} has a malformed key")
        raw_type = part.get("key_type", int(KeyType.DICT))
        key_type = _KEY_TYPES.get(raw_type) if type(raw_type) is int else None
        if key_type is None:
            raise _corrupt(item, f"entry {key!r} has unknown key_type {raw_type!r}")
        keys.append(name if type(name) is str else str(name))
        types.append(key_type)
    path = TreePath(tuple(keys), tuple(types))
    try:
        validate_path(path, for_reading=True)
    except InvalidNameError as error:
        raise _corrupt(item, f"entry {key!r}: {error}") from error
    value = entry.get("value_metadata")
    value_type = value.get("value_type") if type(value) is dict else None
    if type(value_type) is not str:
        raise _corrupt(item, f"entry {key!r} lacks value_metadata.value_type")
    shape = value.get("write_shape")
    if shape is not None:
        if type(shape) is not list or not all(type(d) is int and 0 <= d < 2**62 for d in shape):
            raise _corrupt(item, f"entry {key!r} has an invalid write_shape {shape!r}")
        shape = tuple(shape)
    return LeafRecord(path=path, value_type=value_type, write_shape=shape)


def read_tree_record(item: Location) -> TreeRecord:
    raw = read_json(item / METADATA_FILE)
    tree = raw.get("tree_metadata")
    if not isinstance(tree, dict):
        raise _corrupt(item, "no tree_metadata object")
    leaves = [_leaf_from_json(item, k, v) for k, v in tree.items()]
    _check_paths_distinct(item, leaves)
    flags = {}
    for flag, default, field in (("use_ocdbt", True, "use_ocdbt"), ("use_zarr3", False, "use_zarr3"),
                                 ("store_array_data_equal_to_fill_value", False, "has_every_chunk")):
        value = raw.get(flag, default)
        if not isinstance(value, bool):
            raise _corrupt(item, f"{flag} is {value!r}, expected true or false")
        flags[field] = value
    return TreeRecord(leaves=leaves, custom_metadata=raw.get("custom_metadata"), **flags)


def _check_paths_distinct(item: Location, leaves: list[LeafRecord]) -> None:
    """Two leaves may not share a parameter name, nor may one leaf sit inside another."""
    names: dict[str, LeafRecord] = {}
    for leaf in leaves:
        other = names.setdefault(leaf.path.param_name, leaf)
        if other is not leaf:
            raise _corrupt(item, f"tree paths {other.path} and {leaf.path} both name parameter "
                                 f"{leaf.path.param_name!r}")
    paths = {leaf.path.keys for leaf in leaves}
    if () in paths and len(paths) > 1:
        raise _corrupt(item, "a leaf at the root (key path []) sits beside other leaves")
    for leaf in leaves:
        for depth in range(1, len(leaf.path.keys)):
            if leaf.path.keys[:depth] in paths:
                raise _corrupt(item, f"tree path {leaf.path} lies inside the leaf at "
                                     f"{list(leaf.path.keys[:depth])}")
