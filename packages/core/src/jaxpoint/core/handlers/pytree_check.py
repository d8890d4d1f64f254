"""`verify_tree`: the PyTree handler's check of one item folder, metadata and arrays.

Every metadata file the handler writes parses and agrees with `_METADATA` (tree paths,
parameter names, write and chunk shapes, saved shardings, string leaves); then storage
checks the array database, every chunk, and reads every array back.
"""

from __future__ import annotations

import collections
import json
from typing import Any

import numpy as np
from jaxpoint.core.errors import CorruptCheckpointError
from jaxpoint.core.handlers.item_report import ItemReport
from jaxpoint.core.handlers.pytree import STRINGS_FILE, read_array_metadatas
from jaxpoint.core.handlers.pytree_metadata import (
    ARRAY_TYPES,
    EMPTY_TYPES,
    JAX_ARRAY,
    METADATA_FILE,
    STRING,
    LeafRecord,
    TreeRecord,
    read_tree_record,
)
from jaxpoint.core.handlers.sharding_metadata import SHARDING_FILE, decode_name
from jaxpoint.core.storage import Location, read_json
from jaxpoint.core.storage.integrity import chunk_counts, open_checked, read_completely
from jaxpoint.core.tree.keys import KeyType

_SHARDING_TYPES = frozenset({"NamedSharding", "SingleDeviceSharding", "GSPMDSharding",
                             "PositionalSharding"})


def verify_tree(folder: Location, *, name: str, max_in_flight_bytes: int) -> ItemReport:
    """Checks the PyTree item at `folder`; raises CorruptCheckpointError at the first problem."""
    files = [str(folder / METADATA_FILE)]
    record = read_tree_record(folder)
    leaves = {leaf.path.param_name: leaf for leaf in record.leaves}
    _check_tree_shape(folder, record)
    files += _check_strings(folder, record)
    files += _check_shardings(folder, leaves)
    recorded_files, recorded_chunks = _check_array_metadatas(folder, leaves)
    files += recorded_files
    arrays = [leaf for leaf in record.leaves if leaf.is_array]
    counts = chunk_counts(folder, use_ocdbt=record.use_ocdbt) if arrays else {}
    checked = open_checked(folder, [leaf.path.param_name for leaf in arrays], counts,
                           use_ocdbt=record.use_ocdbt, use_zarr3=record.use_zarr3,
                           has_every_chunk=record.has_every_chunk)
    for leaf, array in zip(arrays, checked, strict=True):
        where = f"parameter {array.name!r} (stored shape {list(array.shape)})"
        if leaf.write_shape is not None and (len(leaf.write_shape) != len(array.shape) or any(
                w > s for w, s in zip(leaf.write_shape, array.shape, strict=False))):
            raise CorruptCheckpointError(
                f"{where}: {folder / METADATA_FILE} records write_shape "
                f"{list(leaf.write_shape)}, which does not fit the stored shape.")
        recorded = recorded_chunks.get(array.name)
        if recorded is not None and recorded not in (array.write_chunk, array.read_chunk):
            raise CorruptCheckpointError(
                f"{where}: array_metadatas record chunk_shape {list(recorded)} but the zarr "
                f"metadata has {list(array.write_chunk)}.")
    nbytes = read_completely(folder, checked, max_in_flight_bytes=max_in_flight_bytes)
    return ItemReport(name=name, kind="pytree", metadata_files=tuple(files), arrays=len(arrays),
                      chunks=sum(array.chunks for array in checked), array_bytes=nbytes)


def _check_strings(folder: Location, record: TreeRecord) -> list[str]:
    names = {leaf.path.param_name for leaf in record.leaves if leaf.value_type == STRING}
    location = folder / STRINGS_FILE
    if not names and not location.exists():
        return []
    strings = read_json(location)
    wrong = sorted(n for n in names if not isinstance(strings.get(n), str))
    extra = sorted(set(strings) - names)
    if wrong or extra:
        raise CorruptCheckpointError(
            f"Expected {location} to hold exactly the string leaves {sorted(names)[:20]}, "
            f"but {wrong[:20]} are missing or not strings and {extra[:20]} are unknown.")
    return [str(location)]


def _check_shardings(folder: Location, leaves: dict[str, LeafRecord]) -> list[str]:
    location = folder / SHARDING_FILE
    if not location.exists():
        return []
    for key, value in read_json(location).items():
        try:
            name = decode_name(key)
            info = json.loads(value)
        except (ValueError, TypeError, RecursionError) as error:
            raise CorruptCheckpointError(f"Invalid entry {key!r:.80} in {location}: {error}") from error
        leaf = leaves.get(name)
        if leaf is None or leaf.value_type != JAX_ARRAY:
            raise CorruptCheckpointError(
                f"{location} has a sharding for {name!r:.80}, which is not a jax.Array "
                "parameter of the tree metadata.")
        problem = _sharding_problem(info)
        if problem:
            raise CorruptCheckpointError(
                f"Invalid sharding of parameter {name!r} in {location}: {problem}.")
    return [str(location)]


def _check_array_metadatas(folder: Location, leaves: dict[str, LeafRecord]
                           ) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    """Validates `array_metadatas/process_<i>`; returns its files and the chunk shapes recorded."""
    files: list[str] = []
    chunks: dict[str, tuple[int, ...]] = {}
    for location, metas in read_array_metadatas(folder).items():
        files.append(str(location))
        for meta in metas:
            name = meta.get("param_name")
            leaf = leaves.get(name) if isinstance(name, str) else None
            if leaf is None or not leaf.is_array:
                raise CorruptCheckpointError(
                    f"{location} describes {meta!r:.120}, which is not an array parameter "
                    "of the tree metadata.")
            write_shape = _shape_or_none(meta.get("write_shape"))
            chunk_shape = _shape_or_none(meta.get("chunk_shape"))
            ext = meta.get("ext_metadata")
            if (write_shape is False or chunk_shape is False or ext is not None and not (
                    isinstance(ext, dict) and isinstance(ext.get("random_key_impl", ""), str))):
                raise CorruptCheckpointError(
                    f"Invalid entry for parameter {name!r} in {location}: {meta!r:.200}.")
            if isinstance(write_shape, tuple) and leaf.write_shape is not None \
                    and write_shape != leaf.write_shape:
                raise CorruptCheckpointError(
                    f"Parameter {name!r}: {location} records write_shape {list(write_shape)} "
                    f"but {folder / METADATA_FILE} records {list(leaf.write_shape)}.")
            if isinstance(chunk_shape, tuple):
                chunks[leaf.path.param_name] = chunk_shape
    return files, chunks


def _shape_or_none(value: Any) -> tuple[int, ...] | None | bool:
    """A shape as a tuple, None when absent, False when malformed."""
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool)
                                       and 0 <= d < 2**62 for d in value):
        return tuple(value)
    return False


def _check_tree_shape(folder: Location, record: TreeRecord) -> None:
    """Value types are known, list indices are 0..n-1, and no node mixes key kinds."""
    children: dict[tuple[str, ...], set[tuple[str, KeyType]]] = collections.defaultdict(set)
    for leaf in record.leaves:
        known = leaf.value_type in ARRAY_TYPES or leaf.value_type == STRING or leaf.value_type in EMPTY_TYPES
        if not known:
            raise CorruptCheckpointError(
                f"{folder / METADATA_FILE}: tree path {leaf.path} has unknown value_type "
                f"{leaf.value_type!r}.")
        for depth, (key, kind) in enumerate(zip(leaf.path.keys, leaf.path.key_types, strict=True)):
            children[leaf.path.keys[:depth]].add((key, kind))
    for parent, entries in children.items():
        kinds = {kind for _, kind in entries}
        indices = sorted(key for key, _ in entries)
        is_list = kinds == {KeyType.SEQUENCE}
        if len(kinds) > 1 or is_list and sorted(indices, key=_index) != [
                str(i) for i in range(len(indices))]:
            raise CorruptCheckpointError(
                f"{folder / METADATA_FILE}: the node at {list(parent)} has inconsistent keys "
                f"{sorted(entries)[:10]} (list indices must be 0..n-1, and a node holds list "
                "indices or dict keys, not both).")


def _index(key: str) -> int:
    return int(key) if key.isdigit() else -1


def _sharding_problem(info: Any) -> str | None:
    if not isinstance(info, dict) or info.get("sharding_type") not in _SHARDING_TYPES:
        return f"unknown sharding {info!r:.120}"
    if info["sharding_type"] == "SingleDeviceSharding":
        text = info.get("device_str")
        return None if isinstance(text, str) and text else f"bad device_str {text!r:.60}"
    if info["sharding_type"] != "NamedSharding":
        return None
    shape, axes, spec = info.get("shape"), info.get("axis_names"), info.get("partition_spec", [])
    mesh_shape = _shape_or_none(shape)
    if not isinstance(mesh_shape, tuple) or not isinstance(axes, list) or len(axes) != len(mesh_shape):
        return f"mesh shape {shape!r:.60} and axis names {axes!r:.60} do not match"
    if not all(isinstance(a, str) for a in axes) or len(set(axes)) != len(axes):
        return f"bad axis names {axes!r:.80}"
    used = [p for entry in spec or [] for p in (entry if isinstance(entry, list) else [entry])
            if p is not None] if isinstance(spec, list) else None
    if used is None or any(p not in axes for p in used) or len(set(used)) != len(used):
        return f"partition spec {spec!r:.80} does not use the mesh axes {axes}"
    mesh = info.get("device_mesh", {"mesh": None}).get("mesh") if isinstance(
        info.get("device_mesh", {}), dict) else False
    if mesh is None:
        return None
    try:
        ids = np.vectorize(lambda e: int(e["id"]), otypes=[np.int64])(np.array(mesh, dtype=object))
    except (TypeError, KeyError, ValueError, IndexError):
        return f"malformed device mesh {mesh!r:.80}"
    if ids.shape != mesh_shape or len(set(ids.flat)) != ids.size:
        return f"device mesh of shape {list(ids.shape)} with ids {ids.flatten().tolist()[:16]}"
    return None


__all__ = ["verify_tree"]
