"""`describe(path)`: what a checkpoint holds, as JSON-serialisable data, without reading arrays.

For a step, every item; for one item folder, that item. A PyTree item (standard, pytree,
array, and the key part of random-key items) becomes its tree, each array leaf with its
shape, dtype, saved sharding, logical bytes and how it is stored; any other item lists
its files and sub-items. Only metadata files and zarr headers are read.
"""

from __future__ import annotations

import math
import os
from typing import Any

from jaxpoint.core.checkpointers.save_pipeline import ensure_committed
from jaxpoint.core.checkpointers.step_metadata import read_step_metadata
from jaxpoint.core.errors import CorruptCheckpointError
from jaxpoint.core.handlers.pytree import read_random_key_impls
from jaxpoint.core.handlers.pytree_metadata import EMPTY_TYPES, METADATA_FILE, read_tree_record
from jaxpoint.core.handlers.sharding_metadata import read_shardings
from jaxpoint.core.storage import Location, open_arrays
from jaxpoint.core.storage.step_layout import STEP_METADATA_FILE, is_item_name, item_folders
from jaxpoint.core.tree.build import build_tree

_MAX_FOLDER_DEPTH = 4


def describe(path: str | os.PathLike[str] | Location) -> dict[str, Any]:
    """The items of the committed step at `path` (or the one item at `path`), as plain data.

    Returns `{"path": str, "items": {name: item}}`; a single item at `path` has name "".
    Each item is `{"handler": str | None, "kind": "pytree" | "files", ...}`: a pytree
    item adds `"tree"`, whose array leaves are `{"value_type", "shape", "dtype",
    "sharding", "bytes", "storage"}`; other items add `"files"` and `"items"`.

    >>> import jaxpoint.core as ocp, numpy as np, tempfile, os, json
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> ocp.save(path, {"w": np.zeros((2, 3), np.float32)})
    >>> leaf = describe(path)["items"][""]["tree"]["w"]
    >>> leaf["shape"], leaf["dtype"], leaf["bytes"]
    ([2, 3], 'float32', 24)
    """
    location = Location.parse(path)
    handlers: object = None
    if (location / STEP_METADATA_FILE).exists():
        ensure_committed(location)
        handlers = read_step_metadata(location).item_handlers
    elif (location.parent / STEP_METADATA_FILE).exists():
        ensure_committed(location.parent)  # one item folder of a step
        recorded = read_step_metadata(location.parent).item_handlers
        handlers = recorded.get(location.name) if isinstance(recorded, dict) else None
    else:
        ensure_committed(location)
        if not (location / METADATA_FILE).exists():
            raise CorruptCheckpointError(
                f"Expected {METADATA_FILE} or {STEP_METADATA_FILE} in {location} (or "
                f"{STEP_METADATA_FILE} in its parent), found neither (it holds "
                f"{location.list_names()[:20]}). Pass a checkpoint folder (a step) or one of "
                "its item folders, not the directory above it.")
    if isinstance(handlers, dict) and not (location / METADATA_FILE).exists():
        items = {name: describe_item(location / name, handlers.get(name))
                 for name in item_folders(location)}
    else:
        items = {"": describe_item(location, handlers if isinstance(handlers, str) else None)}
    return {"path": str(location), "items": items}


def describe_item(folder: Location, handler: str | None, *, depth: int = 0) -> dict[str, Any]:
    """One item folder as plain data; `handler` is the type name the step records for it."""
    if (folder / METADATA_FILE).exists():
        return {"handler": handler, "kind": "pytree", **_describe_tree(folder)}
    files: dict[str, dict[str, int]] = {}
    items: dict[str, dict[str, Any]] = {}
    for name in folder.list_names():
        child = folder / name
        if not is_item_name(name) and not name.startswith("_"):
            continue  # the commit marker, a save in flight
        if child.is_file():
            files[name] = {"bytes": len(child.read_bytes())}
        elif depth < _MAX_FOLDER_DEPTH:
            items[name] = describe_item(child, None, depth=depth + 1)
        else:
            raise CorruptCheckpointError(
                f"Expected folders at most {_MAX_FOLDER_DEPTH} deep in an item, found deeper "
                f"ones at {child}. The checkpoint is damaged or not one.")
    return {"handler": handler, "kind": "files", "files": files, "items": items}


def _describe_tree(folder: Location) -> dict[str, Any]:
    record = read_tree_record(folder)
    arrays = [leaf for leaf in record.leaves if leaf.is_array]
    stored = open_arrays(folder, [leaf.path.param_name for leaf in arrays],
                         use_ocdbt=record.use_ocdbt, use_zarr3=record.use_zarr3)
    by_name = {array.param_name: array for array in stored}
    shardings = read_shardings(folder) if arrays else {}
    key_impls = read_random_key_impls(folder) if arrays else {}
    storage = {"format": "zarr3" if record.use_zarr3 else "zarr2", "ocdbt": record.use_ocdbt}
    entries = []
    for leaf in record.leaves:
        name = leaf.path.param_name
        value: Any
        if leaf.is_array:
            array = by_name[name]
            value = {
                "value_type": leaf.value_type, "shape": list(array.shape),
                "dtype": array.dtype.name, "sharding": shardings.get(name),
                "bytes": math.prod(array.shape) * array.dtype.itemsize,
                "storage": {**storage, "chunk_shape": list(array.chunk_shape) or None,
                            "write_shape": list(leaf.write_shape) if leaf.write_shape else None},
            }
            if name in key_impls:
                value["random_key_impl"] = key_impls[name]
        elif leaf.value_type in EMPTY_TYPES:
            empty = EMPTY_TYPES[leaf.value_type]
            value = [] if empty is tuple else (empty() if empty else None)
        else:
            value = {"value_type": leaf.value_type}
        entries.append((leaf.path, value))
    return {"tree": build_tree(entries), "custom_metadata": record.custom_metadata}


__all__ = ["describe", "describe_item"]
