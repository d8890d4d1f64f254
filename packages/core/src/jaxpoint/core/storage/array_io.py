"""Bulk array reads and writes through TensorStore.

Cost must follow bytes, not the number of leaves: every array of a tree is opened
concurrently, every shard is written or read concurrently, and Python only waits at
the end. Nothing here copies array data; callers own the buffers they pass in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorstore as ts
from jaxpoint.core.errors import CorruptCheckpointError, StorageError
from jaxpoint.core.storage.array_format import (
    ArrayFormat,
    create_spec,
    open_spec,
    process_database_spec,
)
from jaxpoint.core.storage.context import shared_context
from jaxpoint.core.storage.location import Location

Index = tuple[slice, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArrayWrite:
    """One array to create and the shards of it that this process writes."""

    param_name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunk_shape: tuple[int, ...]
    shards: Sequence[tuple[Index, np.ndarray]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArrayRead:
    """Regions of one stored array to read, each into a new host buffer of `dtype`."""

    param_name: str
    regions: Sequence[Index]
    dtype: np.dtype | None = None


def write_arrays(item: Location, writes: Sequence[ArrayWrite], *, fmt: ArrayFormat,
                 process_index: int) -> None:
    """Writes every shard of `writes` into this process's database under `item`."""
    if not writes:
        return
    database = process_database_spec(item, process_index) if fmt.use_ocdbt else None
    context = shared_context()
    opening = [
        ts.open(create_spec(item, w.param_name, database=database, shape=w.shape, dtype=w.dtype,
                            chunk_shape=w.chunk_shape, fmt=fmt), create=True, context=context)
        for w in writes
    ]
    pending: list[tuple[str, Any]] = []
    for write, future in zip(writes, opening, strict=True):
        store = _result(future, "create", item, write.param_name)
        for index, data in write.shards:
            pending.append((write.param_name, store[index].write(
                data, can_reference_source_data_indefinitely=True)))
    for name, future in pending:
        _result(future, "write", item, name)


def open_arrays(item: Location, names: Sequence[str], *, use_ocdbt: bool,
                use_zarr3: bool) -> list[ts.TensorStore]:
    """Opens stored arrays concurrently; metadata comes from the files."""
    context = shared_context()
    opening = [ts.open(open_spec(item, name, use_ocdbt=use_ocdbt, use_zarr3=use_zarr3),
                       open=True, read=True, context=context) for name in names]
    return [_result(f, "open", item, name) for f, name in zip(opening, names, strict=True)]


# XLA's CPU client adopts host buffers aligned to 64 bytes without copying them.
BUFFER_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a BUFFER_ALIGNMENT boundary."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + BUFFER_ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % BUFFER_ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def read_arrays(item: Location, stores: Sequence[ts.TensorStore],
                reads: Sequence[ArrayRead]) -> list[list[np.ndarray]]:
    """Reads every region of every request concurrently into new aligned host buffers.

    Reading straight into 64-byte aligned buffers lets `jax.device_put` on CPU adopt
    them, so a restore holds each byte once instead of twice.
    """
    pending = []
    for store, request in zip(stores, reads, strict=True):
        dtype = np.dtype(request.dtype if request.dtype is not None else store.dtype.numpy_dtype)
        view = store if dtype == store.dtype.numpy_dtype else ts.cast(store, dtype)
        requests = []
        for index in request.regions:
            region = view[index]
            buffer = aligned_empty(tuple(region.shape), dtype)
            requests.append((buffer, ts.array(buffer, copy=False, write=True).write(region)))
        pending.append(requests)
    results = []
    for requests, request in zip(pending, reads, strict=True):
        for _, future in requests:
            _result(future, "read", item, request.param_name)
        results.append([buffer for buffer, _ in requests])
    return results


def _result(future: Any, action: str, item: Location, param_name: str) -> Any:
    try:
        return future.result()
    except Exception as error:
        text = str(error)
        where = f"parameter {param_name!r} of {item}"
        if action == "read" and ("checksum" in text.lower() or "crc32c" in text.lower()
                                 or "corrupt" in text.lower() or "invalid" in text.lower()):
            raise CorruptCheckpointError(
                f"Could not read {where}: {text}. The stored data is corrupt; restore an "
                "earlier checkpoint."
            ) from error
        if action in ("open", "read") and ("NOT_FOUND" in text or "not found" in text.lower()):
            raise CorruptCheckpointError(
                f"Expected stored array {where}, found none ({text}). The checkpoint is "
                "incomplete or damaged; restore an earlier checkpoint."
            ) from error
        raise StorageError(f"Could not {action} {where}: {text}") from error
