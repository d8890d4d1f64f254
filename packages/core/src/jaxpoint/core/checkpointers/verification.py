"""`verify(path)`: read a whole checkpoint back and check every byte against its metadata.

What is checked, per item (a single item at the root, or one folder per item):
  - every metadata file parses as bounded JSON and validates: `_CHECKPOINT_METADATA`,
    `_METADATA`, `_sharding`, `_strings.json`, `array_metadatas/process_<i>`, JSON items;
  - the files agree with each other: tree paths, parameter names, write and chunk shapes,
    saved shardings, the items `_CHECKPOINT_METADATA` records;
  - every OCDBT database (the item's merged one and each `ocdbt.process_<i>`) decodes,
    manifest and B-tree nodes included (both carry CRC-32C), and the merged one holds
    every key of the per-process ones;
  - every array opens (its zarr metadata is valid), holds every chunk of its grid, and
    reads completely: zarr3's crc32c codec fails a chunk with a flipped or missing byte.
Legacy zarr2 arrays (orbax's default) and orbax's zarr3 arrays carry no chunk checksum:
they are read completely, which catches truncation and undecodable data but not a
flipped byte inside an uncompressed chunk.

The first problem found raises `CorruptCheckpointError` naming the item, the parameter
and the file or key; an environment failure (permissions, network) raises StorageError.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorstore as ts
from jaxpoint.core.checkpointers.save_pipeline import ensure_committed
from jaxpoint.core.checkpointers.step_metadata import STEP_METADATA_FILE, read_step_metadata
from jaxpoint.core.errors import CorruptCheckpointError
from jaxpoint.core.handlers import JsonCheckpointHandler
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
from jaxpoint.core.handlers.registry import handler_for_typestr
from jaxpoint.core.storage import COMMIT_MARKER, Location, is_tmp_name, read_json
from jaxpoint.core.storage.array_format import PROCESS_DB_PREFIX, open_spec
from jaxpoint.core.storage.array_io import read_array_headers, tensorstore_error
from jaxpoint.core.storage.checksums import CHECKSUM_FILE, check_checksums
from jaxpoint.core.storage.context import shared_context
from jaxpoint.core.tree import KeyType

SHARDING_FILE = "_sharding"
STRINGS_FILE = "_strings.json"
ARRAY_METADATAS = "array_metadatas"
_ZARR_METADATA_KEYS = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
_SHARDING_TYPES = frozenset({"NamedSharding", "SingleDeviceSharding", "GSPMDSharding",
                             "PositionalSharding"})
# No real array is a pebibyte; a larger stored shape is a damaged header.
_MAX_ARRAY_BYTES = 2**50
_MAX_FOLDER_DEPTH = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class ItemReport:
    """What `verify` checked in one item. `name` is "" for a single item at the root."""

    name: str
    kind: str  # "pytree", "json" or "files"
    metadata_files: tuple[str, ...] = ()
    arrays: int = 0
    chunks: int = 0
    array_bytes: int = 0
    unchecked_files: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerificationReport:
    """The result of a `verify` that found nothing wrong."""

    path: str
    items: tuple[ItemReport, ...]
    warnings: tuple[str, ...] = ()

    @property
    def arrays(self) -> int:
        return sum(item.arrays for item in self.items)

    @property
    def array_bytes(self) -> int:
        return sum(item.array_bytes for item in self.items)

    @property
    def metadata_files(self) -> int:
        return sum(len(item.metadata_files) for item in self.items)


def verify(path: str | os.PathLike[str] | Location, *,
           max_in_flight_bytes: int = 256 * 2**20) -> VerificationReport:
    """Reads the committed checkpoint at `path` completely and validates all its metadata.

    Raises CorruptCheckpointError naming the item, parameter and file or key of the first
    problem; CheckpointNotFoundError / UncommittedCheckpointError when `path` holds no
    committed checkpoint. Memory stays below about `max_in_flight_bytes` of array data.

    >>> import jaxpoint.core as ocp, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> ocp.save(path, {"w": np.arange(4.0)})
    >>> verify(path).arrays
    1
    """
    location = Location.parse(path)
    ensure_committed(location)
    warnings: list[str] = []
    if check_checksums(location) is None:
        warnings.append(f"{location} has no {CHECKSUM_FILE} (not written by jaxpoint): JSON "
                        "metadata values and legacy zarr files are validated, not checksummed")
    handlers: Any = None
    if (location / STEP_METADATA_FILE).exists():
        handlers = read_step_metadata(location).item_handlers
    else:
        warnings.append(f"{location} has no {STEP_METADATA_FILE} (written by an old orbax?)")
    checker = _ItemChecker(max_in_flight_bytes=max_in_flight_bytes, warnings=warnings)
    if (location / METADATA_FILE).exists() or not isinstance(handlers, dict):
        if handlers is None and not (location / METADATA_FILE).exists():
            raise CorruptCheckpointError(
                f"Expected {METADATA_FILE} or {STEP_METADATA_FILE} in {location}, found "
                f"neither (it holds {location.list_names()[:20]}). Pass a checkpoint folder "
                "(a step), not the directory above it."
            )
        items = [checker.check(location, "", handlers if isinstance(handlers, str) else None)]
    else:
        items = _check_composite(location, handlers, checker)
    return VerificationReport(path=str(location), items=tuple(items), warnings=tuple(warnings))


def _check_composite(location: Location, handlers: dict[str, str | None],
                     checker: _ItemChecker) -> list[ItemReport]:
    folders = _item_folders(location)
    missing = sorted(set(handlers) - set(folders))
    if missing:
        raise CorruptCheckpointError(
            f"{location / STEP_METADATA_FILE} records items {missing} but {location} has no "
            f"folder for them (it has {folders}). The checkpoint is incomplete or its "
            "metadata is damaged; restore an earlier checkpoint."
        )
    return [checker.check(location / name, name, handlers.get(name)) for name in folders]


def _item_folders(location: Location) -> list[str]:
    names = []
    for name in location.list_names():
        if name.startswith("_") or name == COMMIT_MARKER or is_tmp_name(name):
            continue
        if not (location / name).is_file():
            names.append(name)
    return names


class _ItemChecker:
    """Checks one item folder; keeps the read budget and the warnings of the whole run."""

    def __init__(self, *, max_in_flight_bytes: int, warnings: list[str]) -> None:
        self._budget = max(1, max_in_flight_bytes)
        self._warnings = warnings

    def check(self, folder: Location, name: str, typestr: str | None, depth: int = 0) -> ItemReport:
        label = f"item {name!r}" if name else "the item"
        try:
            if (folder / METADATA_FILE).exists():
                return _TreeCheck(folder, name, self._budget).run()
            if typestr is not None and handler_for_typestr(typestr) is None:
                self._warnings.append(f"{label} of {folder.parent} has handler {typestr!r}, "
                                      "which is not registered here")
            return self._check_files(folder, name, typestr, depth)
        except CorruptCheckpointError as error:
            raise CorruptCheckpointError(f"{label.capitalize()} at {folder} is corrupt: {error}") from error

    def _check_files(self, folder: Location, name: str, typestr: str | None, depth: int) -> ItemReport:
        is_json = typestr is not None and handler_for_typestr(typestr) is JsonCheckpointHandler
        parsed, unchecked, nested = [], [], []
        for child in folder.list_names():
            location = folder / child
            if child == COMMIT_MARKER or is_tmp_name(child):
                continue
            if not location.is_file():
                if depth >= _MAX_FOLDER_DEPTH:
                    raise CorruptCheckpointError(f"folders nest deeper than {_MAX_FOLDER_DEPTH} at {location}")
                nested.append(self.check(location, f"{name}/{child}" if name else child, None, depth + 1))
            elif is_json or child in ("metadata", "metrics") or child.endswith(".json"):
                read_json(location, expect=object)
                parsed.append(str(location))
            else:
                unchecked.append(str(location))
        if unchecked:
            self._warnings.append(f"no checks known for {unchecked[:5]}: only tree and JSON items "
                                  "are validated")
        return ItemReport(
            name=name, kind="json" if parsed and not unchecked and not nested else "files",
            metadata_files=tuple(parsed) + tuple(f for r in nested for f in r.metadata_files),
            arrays=sum(r.arrays for r in nested), chunks=sum(r.chunks for r in nested),
            array_bytes=sum(r.array_bytes for r in nested),
            unchecked_files=tuple(unchecked) + tuple(f for r in nested for f in r.unchecked_files))


class _TreeCheck:
    """The checks of one PyTree item folder, in the order they run."""

    def __init__(self, folder: Location, name: str, budget: int) -> None:
        self.folder, self.name, self.budget = folder, name, budget
        self.files: list[str] = []

    def run(self) -> ItemReport:
        record = read_tree_record(self.folder)
        self.files.append(str(self.folder / METADATA_FILE))
        leaves = {leaf.path.param_name: leaf for leaf in record.leaves}
        _check_tree_shape(self.folder, record)
        self._check_strings(record)
        self._check_shardings(leaves)
        recorded_chunks = self._check_array_metadatas(leaves)
        arrays = [leaf for leaf in record.leaves if leaf.is_array]
        keys = self._database_keys(record) if arrays else {}
        stores = _open_stores(self.folder, record, [leaf.path.param_name for leaf in arrays])
        chunks = 0
        for leaf, store in zip(arrays, stores, strict=True):
            chunks += self._check_array_header(record, leaf, store, keys, recorded_chunks)
        nbytes = _read_all(self.folder, arrays, stores, self.budget)
        return ItemReport(name=self.name, kind="pytree", metadata_files=tuple(self.files),
                          arrays=len(arrays), chunks=chunks, array_bytes=nbytes)

    def _file(self, name: str) -> Location:
        location = self.folder / name
        self.files.append(str(location))
        return location

    def _check_strings(self, record: TreeRecord) -> None:
        names = {leaf.path.param_name for leaf in record.leaves if leaf.value_type == STRING}
        if not names and not (self.folder / STRINGS_FILE).exists():
            return
        location = self._file(STRINGS_FILE)
        strings = read_json(location)
        wrong = sorted(n for n in names if not isinstance(strings.get(n), str))
        extra = sorted(set(strings) - names)
        if wrong or extra:
            raise CorruptCheckpointError(
                f"Expected {location} to hold exactly the string leaves {sorted(names)[:20]}, "
                f"but {wrong[:20]} are missing or not strings and {extra[:20]} are unknown.")

    def _check_shardings(self, leaves: dict[str, LeafRecord]) -> None:
        if not (self.folder / SHARDING_FILE).exists():
            return
        location = self._file(SHARDING_FILE)
        for key, value in read_json(location).items():
            try:
                name = base64.urlsafe_b64decode(key.encode("ascii")).decode("utf-8")
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

    def _check_array_metadatas(self, leaves: dict[str, LeafRecord]) -> dict[str, tuple[int, ...]]:
        """Validates `array_metadatas/process_<i>`; returns the chunk shapes they record."""
        chunks: dict[str, tuple[int, ...]] = {}
        for process in (self.folder / ARRAY_METADATAS).list_names():
            location = self.folder / ARRAY_METADATAS / process
            self.files.append(str(location))
            entries = read_json(location).get("array_metadatas")
            if not isinstance(entries, list):
                raise CorruptCheckpointError(f"Expected a list 'array_metadatas' in {location}.")
            for entry in entries:
                meta = entry.get("array_metadata") if isinstance(entry, dict) else None
                name = meta.get("param_name") if isinstance(meta, dict) else None
                leaf = leaves.get(name) if isinstance(name, str) else None
                if leaf is None or not leaf.is_array:
                    raise CorruptCheckpointError(
                        f"{location} describes {entry!r:.120}, which is not an array parameter "
                        "of the tree metadata.")
                write_shape = _shape_or_none(meta.get("write_shape"))
                chunk_shape = _shape_or_none(meta.get("chunk_shape"))
                ext = meta.get("ext_metadata")
                if (write_shape is False or chunk_shape is False or ext is not None and not (
                        isinstance(ext, dict) and isinstance(ext.get("random_key_impl", ""), str))):
                    raise CorruptCheckpointError(
                        f"Invalid entry for parameter {name!r} in {location}: {meta!r:.200}.")
                if write_shape is not None and leaf.write_shape is not None and write_shape != leaf.write_shape:
                    raise CorruptCheckpointError(
                        f"Parameter {name!r}: {location} records write_shape {list(write_shape)} "
                        f"but {self.folder / METADATA_FILE} records {list(leaf.write_shape)}.")
                if chunk_shape is not None:
                    chunks[name] = chunk_shape
        return chunks

    def _database_keys(self, record: TreeRecord) -> dict[str, int]:
        """Chunk keys per parameter in the item's store; checks every per-process database."""
        if record.use_ocdbt:
            root = _check_database(self.folder, f"the merged array database of {self.folder}")
        else:
            root = set(_list_keys(self.folder.kvstore_spec(), self.folder,
                                  f"the array folders of {self.folder}"))
        if record.use_ocdbt:
            for name in self.folder.list_names():
                if not name.startswith(PROCESS_DB_PREFIX):
                    continue
                base = self.folder / name
                process_keys = _check_database(base, f"the per-process database {base}")
                lost = sorted(process_keys - root)
                if lost:
                    raise CorruptCheckpointError(
                        f"The merged database {self.folder / 'manifest.ocdbt'} lacks keys "
                        f"{lost[:10]} of {base}: the merge is incomplete or damaged.")
        counts: dict[str, int] = collections.Counter()
        for key in root:
            param, _, rest = key.partition("/")
            if rest and rest not in _ZARR_METADATA_KEYS:
                counts[param] += 1
            if key not in _ZARR_METADATA_KEYS:
                counts[""] += 1  # a tree that is one array at the root stores keys bare
        return counts

    def _check_array_header(self, record: TreeRecord, leaf: LeafRecord, store: ts.TensorStore,
                            keys: dict[str, int], recorded_chunks: dict[str, tuple[int, ...]]) -> int:
        name = leaf.path.param_name
        shape = tuple(store.shape)
        where = f"parameter {name!r} (stored shape {list(shape)})"
        itemsize = np.dtype(store.dtype.numpy_dtype).itemsize
        if math.prod(shape) * itemsize > _MAX_ARRAY_BYTES:
            raise CorruptCheckpointError(f"{where} would hold {math.prod(shape) * itemsize} bytes: "
                                         "its zarr metadata is damaged.")
        if leaf.write_shape is not None and (len(leaf.write_shape) != len(shape) or any(
                w > s for w, s in zip(leaf.write_shape, shape, strict=False))):
            raise CorruptCheckpointError(
                f"{where}: {self.folder / METADATA_FILE} records write_shape "
                f"{list(leaf.write_shape)}, which does not fit the stored shape.")
        layout = store.chunk_layout
        grid = tuple(layout.write_chunk.shape or shape)
        recorded = recorded_chunks.get(name)
        if recorded is not None and recorded not in (grid, tuple(layout.read_chunk.shape or grid)):
            raise CorruptCheckpointError(
                f"{where}: array_metadatas record chunk_shape {list(recorded)} but the zarr "
                f"metadata has {list(grid)}.")
        expected = math.prod(-(-s // max(c, 1)) for s, c in zip(shape, grid, strict=True))
        found = keys.get(name, 0)
        if found > expected or (record.has_every_chunk and found != expected):
            raise CorruptCheckpointError(
                f"{where}: expected {expected} chunk(s) under key {name + '/'!r}, found {found}. "
                "Chunks are missing or the zarr metadata is damaged.")
        return found


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
    if _shape_or_none(shape) in (None, False) or not isinstance(axes, list) or len(axes) != len(shape):
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
    if ids.shape != tuple(shape) or len(set(ids.flat)) != ids.size:
        return f"device mesh of shape {list(ids.shape)} with ids {ids.flatten().tolist()[:16]}"
    return None


def _open_stores(folder: Location, record: TreeRecord, names: Sequence[str]) -> list[ts.TensorStore]:
    """Opens every array through TensorStore's zarr drivers, which check every codec."""
    # Bounds-checks every header first: TensorStore must never parse a hostile one.
    read_array_headers(folder, names, use_ocdbt=record.use_ocdbt, use_zarr3=record.use_zarr3)
    opening = [ts.open(open_spec(folder, name, use_ocdbt=record.use_ocdbt, use_zarr3=record.use_zarr3,
                                 has_every_chunk=record.has_every_chunk),
                       open=True, read=True, context=shared_context()) for name in names]
    stores = []
    for name, future in zip(names, opening, strict=True):
        try:
            stores.append(future.result())
        except Exception as error:  # TensorStore raises ValueError and friends
            raise tensorstore_error(error, action="open", item=folder,
                                    where=f"parameter {name!r}") from error
    return stores


def _check_database(base: Location, where: str) -> set[str]:
    """Decodes every version of the OCDBT database at `base`; returns the latest keys.

    Listing a version reads all of its B-tree nodes, each checked by its CRC-32C. Older
    versions (one per write transaction) are checked too, so that every node file of
    the database is read, not only those of the version restores use.
    """
    try:
        store = ts.KvStore.open(base.kvstore_spec(), context=shared_context()).result()
        manifest = ts.ocdbt.dump(store).result()
        generations = [v.get("generation_number") for v in manifest.get("versions", [])]
        latest = max((g for g in generations if isinstance(g, int)), default=0)
    except Exception as error:  # TensorStore raises ValueError and friends
        raise tensorstore_error(error, action="read", where=f"{where} (manifest.ocdbt)",
                                item=base) from error
    keys: list[str] = []
    for generation in range(1, latest + 1):
        keys = _list_keys({"driver": "ocdbt", "base": base.kvstore_spec(), "version": generation},
                          base, f"{where}, version {generation}")
    return set(keys)


def _list_keys(spec: dict[str, Any], location: Location, where: str) -> list[str]:
    try:
        store = ts.KvStore.open(spec, context=shared_context()).result()
        return [key.decode("utf-8", "replace") for key in store.list().result()]
    except Exception as error:  # TensorStore raises ValueError and friends
        raise tensorstore_error(error, action="read", where=where, item=location) from error


def _slabs(shape: tuple[int, ...], grid: tuple[int, ...], itemsize: int, budget: int) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned slabs along the first axis, each about `budget` bytes or one chunk row."""
    if not shape:
        yield ()
        return
    row_bytes = math.prod(shape[1:]) * itemsize
    step = max(1, grid[0])
    rows = max(step, (budget // max(row_bytes, 1)) // step * step)
    for start in range(0, shape[0], rows):
        yield (slice(start, min(start + rows, shape[0])),) + tuple(slice(0, d) for d in shape[1:])


def _read_all(folder: Location, leaves: Sequence[LeafRecord], stores: Sequence[ts.TensorStore],
              budget: int) -> int:
    """Reads every array completely, with at most about `budget` bytes in flight."""
    pending: collections.deque[tuple[str, int, Any]] = collections.deque()
    in_flight = total = 0

    def finish_oldest() -> None:
        nonlocal in_flight, total
        name, nbytes, future = pending.popleft()
        try:
            future.result()
        except Exception as error:  # TensorStore raises ValueError and friends
            raise tensorstore_error(error, action="read", item=folder,
                                    where=f"parameter {name!r}") from error
        in_flight -= nbytes
        total += nbytes

    for leaf, store in zip(leaves, stores, strict=True):
        shape = tuple(store.shape)
        itemsize = np.dtype(store.dtype.numpy_dtype).itemsize
        grid = tuple(store.chunk_layout.write_chunk.shape or shape)
        for index in _slabs(shape, grid, itemsize, max(1, budget // 4)):
            nbytes = math.prod(s.stop - s.start for s in index) * itemsize
            while pending and in_flight + nbytes > budget:
                finish_oldest()
            pending.append((leaf.path.param_name, nbytes, store[index].read()))
            in_flight += nbytes
    while pending:
        finish_oldest()
    return total


__all__ = ["ItemReport", "VerificationReport", "verify"]
