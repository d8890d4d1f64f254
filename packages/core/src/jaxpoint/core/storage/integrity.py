"""Storage-level integrity checks: an array database decodes and holds every chunk.

What a handler's `verify` asks of storage, and nothing about trees or metadata files:
  - every version of an OCDBT database decodes (manifest and B-tree nodes carry CRC-32C),
    and the merged database of an item holds every key of its per-process ones;
  - each array opens through TensorStore's zarr driver (its header is bounds-checked
    first), its stored shape is plausible, and the number of chunks found matches its grid;
  - every array reads completely, with a bound on the bytes in flight: zarr3's crc32c
    codec fails a chunk with a flipped or missing byte.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorstore as ts
from jaxpoint.core.errors import CorruptCheckpointError
from jaxpoint.core.storage.array_format import (
    OCDBT_MANIFEST,
    PROCESS_DB_PREFIX,
    ZARR2_HEADER,
    ZARR3_HEADER,
    open_spec,
)
from jaxpoint.core.storage.array_io import read_array_headers, tensorstore_error
from jaxpoint.core.storage.context import shared_context
from jaxpoint.core.storage.location import Location

ZARR_METADATA_KEYS = frozenset({ZARR3_HEADER, ZARR2_HEADER, ".zattrs", ".zgroup", ".zmetadata"})
# No real array is a pebibyte; a larger stored shape is a damaged header.
MAX_ARRAY_BYTES = 2**50


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckedArray:
    """An array that opened and whose chunk count matched its grid."""

    name: str
    store: Any  # ts.TensorStore
    shape: tuple[int, ...]
    itemsize: int
    write_chunk: tuple[int, ...]
    read_chunk: tuple[int, ...]
    chunks: int


def chunk_counts(folder: Location, *, use_ocdbt: bool) -> dict[str, int]:
    """Chunk keys per parameter in the item's store; checks every per-process database.

    The key "" counts every chunk key: a tree that is one array at the root stores its
    keys bare.
    """
    if use_ocdbt:
        root = check_database(folder, f"the merged array database of {folder}")
        for name in folder.list_names():
            if not name.startswith(PROCESS_DB_PREFIX):
                continue
            base = folder / name
            lost = sorted(check_database(base, f"the per-process database {base}") - root)
            if lost:
                raise CorruptCheckpointError(
                    f"Expected the merged database {folder / OCDBT_MANIFEST} to hold every key of "
                    f"{base}, but it lacks {lost[:10]}: the merge is incomplete or damaged. "
                    "Restore an earlier checkpoint.")
    else:
        root = set(_list_keys(folder.kvstore_spec(), folder, f"the array folders of {folder}"))
    counts: dict[str, int] = collections.Counter()
    for key in root:
        param, _, rest = key.partition("/")
        if rest and rest not in ZARR_METADATA_KEYS:
            counts[param] += 1
        if key not in ZARR_METADATA_KEYS:
            counts[""] += 1
    return counts


def check_database(base: Location, where: str) -> set[str]:
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
        raise tensorstore_error(error, action="read", where=f"{where} ({OCDBT_MANIFEST})",
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


def open_checked(folder: Location, names: Sequence[str], counts: dict[str, int], *,
                 use_ocdbt: bool, use_zarr3: bool, has_every_chunk: bool) -> list[CheckedArray]:
    """Opens every array through TensorStore's zarr drivers, which check every codec.

    `counts` comes from `chunk_counts`; an array with more chunks than its grid, or with
    fewer when `has_every_chunk`, is corrupt.
    """
    # Bounds-checks every header first: TensorStore must never parse a hostile one.
    read_array_headers(folder, names, use_ocdbt=use_ocdbt, use_zarr3=use_zarr3)
    opening = [ts.open(open_spec(folder, name, use_ocdbt=use_ocdbt, use_zarr3=use_zarr3,
                                 has_every_chunk=has_every_chunk),
                       open=True, read=True, context=shared_context()) for name in names]
    checked = []
    for name, future in zip(names, opening, strict=True):
        try:
            store = future.result()
        except Exception as error:  # TensorStore raises ValueError and friends
            raise tensorstore_error(error, action="open", item=folder,
                                    where=f"parameter {name!r}") from error
        checked.append(_check_grid(name, store, counts.get(name, 0), has_every_chunk))
    return checked


def _check_grid(name: str, store: Any, found: int, has_every_chunk: bool) -> CheckedArray:
    shape = tuple(store.shape)
    where = f"parameter {name!r} (stored shape {list(shape)})"
    itemsize = np.dtype(store.dtype.numpy_dtype).itemsize
    if math.prod(shape) * itemsize > MAX_ARRAY_BYTES:
        raise CorruptCheckpointError(
            f"{where} would hold {math.prod(shape) * itemsize} bytes, expected at most "
            f"{MAX_ARRAY_BYTES}: its zarr metadata is damaged. Restore an earlier checkpoint.")
    layout = store.chunk_layout
    grid = tuple(layout.write_chunk.shape or shape)
    expected = math.prod(-(-s // max(c, 1)) for s, c in zip(shape, grid, strict=True))
    if found > expected or (has_every_chunk and found != expected):
        raise CorruptCheckpointError(
            f"{where}: expected {expected} chunk(s) under key {name + '/'!r}, found {found}. "
            "Chunks are missing or the zarr metadata is damaged.")
    return CheckedArray(name=name, store=store, shape=shape, itemsize=itemsize, write_chunk=grid,
                        read_chunk=tuple(layout.read_chunk.shape or grid), chunks=found)


def _slabs(shape: tuple[int, ...], grid: tuple[int, ...], itemsize: int,
           budget: int) -> Iterator[tuple[slice, ...]]:
    """Chunk-aligned slabs along the first axis, each about `budget` bytes or one chunk row."""
    if not shape:
        yield ()
        return
    row_bytes = math.prod(shape[1:]) * itemsize
    step = max(1, grid[0])
    rows = max(step, (budget // max(row_bytes, 1)) // step * step)
    for start in range(0, shape[0], rows):
        yield (slice(start, min(start + rows, shape[0])),) + tuple(slice(0, d) for d in shape[1:])


def read_completely(folder: Location, arrays: Sequence[CheckedArray], *,
                    max_in_flight_bytes: int) -> int:
    """Reads every array completely, with at most about `max_in_flight_bytes` in flight."""
    budget = max(1, max_in_flight_bytes)
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

    for array in arrays:
        for index in _slabs(array.shape, array.write_chunk, array.itemsize, max(1, budget // 4)):
            nbytes = math.prod(s.stop - s.start for s in index) * array.itemsize
            while pending and in_flight + nbytes > budget:
                finish_oldest()
            pending.append((array.name, nbytes, array.store[index].read()))
            in_flight += nbytes
    while pending:
        finish_oldest()
    return total


__all__ = ["CheckedArray", "check_database", "chunk_counts", "open_checked", "read_completely"]
