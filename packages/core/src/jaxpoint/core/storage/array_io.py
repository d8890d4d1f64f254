"""Bulk array reads and writes through TensorStore.

Cost must follow bytes, not the number of leaves: every array of a tree is opened
concurrently, every shard is written or read concurrently, and Python only waits at
the end. Nothing here copies array data; callers own the buffers they pass in.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorstore as ts
from jaxpoint.core.errors import CheckpointError, CorruptCheckpointError, StorageError
from jaxpoint.core.storage import small_arrays
from jaxpoint.core.storage.array_format import (
    ZARR2_HEADER,
    ZARR3_HEADER,
    ArrayFormat,
    create_spec,
    item_database_spec,
    open_spec,
    process_database_spec,
)
from jaxpoint.core.storage.context import shared_context, write_context
from jaxpoint.core.storage.json_file import parse_json
from jaxpoint.core.storage.location import Location
from jaxpoint.core.validation import require_positive_int

Index = tuple[slice, ...]
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArrayWrite:
    """One array to create and the shards of it that this process writes."""

    param_name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunk_shape: tuple[int, ...]
    # Host arrays, or arrays whose `np.asarray` waits for a device-to-host copy in flight.
    shards: Sequence[tuple[Index, Any]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArrayRead:
    """Regions of one stored array to read, each into a new host buffer of `dtype`."""

    param_name: str
    regions: Sequence[Index]
    dtype: np.dtype | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoredArray:
    """An opened stored array: a TensorStore handle, or the raw chunk of a small array."""

    param_name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunk_shape: tuple[int, ...]
    store: ts.TensorStore | None = None
    chunk: bytes | None = None  # small arrays (see small_arrays); None when zero-size


def _is_bulk_write(write: ArrayWrite, fmt: ArrayFormat) -> bool:
    if not (fmt.use_ocdbt and fmt.use_zarr3 and fmt.compression is None):
        return False
    whole = tuple(slice(0, d) for d in write.shape)
    return (len(write.shards) == 1 and _normalized(write.shards[0][0], write.shape) == whole
            and write.chunk_shape == tuple(max(1, d) for d in write.shape)
            and small_arrays.is_small(write.shape, write.dtype))


def _normalized(index: Index, shape: tuple[int, ...]) -> Index:
    return tuple(slice(*s.indices(d)[:2]) for s, d in zip(index, shape, strict=True))


def _key(param_name: str, key: str) -> bytes:
    """A key of `param_name`'s array in OCDBT; a tree that is one array at the root ("")
    stores its keys bare, as TensorStore's zarr driver does for the path "/"."""
    return (f"{param_name}/{key}" if param_name else key).encode()


def _write_small(item: Location, database: dict[str, Any], writes: Sequence[ArrayWrite],
                 nbytes: int, context: ts.Context) -> None:
    """Writes small whole arrays as encoded chunks in bounded OCDBT transactions."""
    arrays = {w.param_name: np.asarray(w.shards[0][1], dtype=w.dtype) for w in writes}
    encoded: dict[str, bytes] = {}
    nonempty = [(name, a) for name, a in arrays.items() if a.size > 0]
    layouts = small_arrays.group_by_layout([(name, a.dtype, a.size) for name, a in nonempty])
    for (dtype, _), names in layouts.items():
        chunks = small_arrays.encode_chunks(dtype, [arrays[name] for name in names])
        encoded.update(zip(names, chunks, strict=True))
    store = _result(ts.KvStore.open(database, context=context), "create", item,
                    writes[0].param_name, nbytes=nbytes)
    transaction, pending, held = ts.Transaction(), [], 0
    for write in writes:
        name = write.param_name
        target = store.with_transaction(transaction)
        pending.append(target.write(_key(name, ZARR3_HEADER),
                                    small_arrays.zarr_json(write.shape, write.dtype)))
        if name in encoded:
            pending.append(target.write(_key(name, small_arrays.chunk_key(write.shape)),
                                        encoded[name]))
            held += len(encoded[name])
        if held >= small_arrays.TRANSACTION_BYTES or write is writes[-1]:
            for future in pending:
                _result(future, "write", item, name, nbytes=nbytes)
            _result(transaction.commit_async(), "write", item, name, nbytes=nbytes)
            transaction, pending, held = ts.Transaction(), [], 0


def write_arrays(item: Location, writes: Sequence[ArrayWrite], *, fmt: ArrayFormat,
                 process_index: int, max_in_flight_bytes: int | None = None) -> None:
    """Writes every shard of `writes` into this process's database under `item`.

    `max_in_flight_bytes` bounds the shard bytes being written at once (None: the bound
    of `item.options`, see `StorageOptions.write_bytes_in_flight`).
    """
    if not writes:
        return
    database = (process_database_spec(item, process_index,
                                      target_data_file_size=fmt.target_data_file_size)
                if fmt.use_ocdbt else None)
    context = write_context(fsync=item.options.fsync)
    nbytes = sum(data.nbytes for w in writes for _, data in w.shards)
    is_bulk = [_is_bulk_write(w, fmt) for w in writes]
    if any(is_bulk):
        assert database is not None, "bulk writes go only into an OCDBT database"
        _write_small(item, database, [w for w, b in zip(writes, is_bulk, strict=True) if b], nbytes,
                     context)
        writes = [w for w, b in zip(writes, is_bulk, strict=True) if not b]
    opening = [
        ts.open(create_spec(item, w.param_name, database=database, shape=w.shape, dtype=w.dtype,
                            chunk_shape=w.chunk_shape, fmt=fmt), create=True, context=context)
        for w in writes
    ]
    in_flight: collections.deque[tuple[str, int, Any]] = collections.deque()
    held = peak = 0
    limit = max_in_flight_bytes or item.options.write_bound(is_compressed=fmt.compression is not None)
    min_requests = item.options.min_requests
    for write, future in zip(writes, opening, strict=True):
        store = _result(future, "create", item, write.param_name, nbytes=nbytes)
        for index, data in write.shards:
            # Encoded chunks live until committed: bound them to keep memory flat.
            while len(in_flight) >= min_requests and held + data.nbytes > limit:
                name, size, oldest = in_flight.popleft()
                _result(oldest, "write", item, name, nbytes=nbytes)
                held -= size
            in_flight.append((write.param_name, data.nbytes, store[index].write(
                np.asarray(data), can_reference_source_data_indefinitely=True)))
            held += data.nbytes
            peak = max(peak, held)
    for name, _, future in in_flight:
        _result(future, "write", item, name, nbytes=nbytes)
    logger.debug("Wrote %d array bytes to %s, at most %d bytes in flight.", nbytes, item, peak)


def open_arrays(item: Location, names: Sequence[str], *, use_ocdbt: bool,
                use_zarr3: bool, has_every_chunk: bool = False) -> list[StoredArray]:
    """Opens stored arrays concurrently; metadata comes from the files.

    Small single-chunk arrays are fetched raw in one batch (see small_arrays); the rest
    are opened through TensorStore. `has_every_chunk`: the writer stored every chunk
    (orbax's `store_array_data_equal_to_fill_value`), so a missing chunk is an error.
    """
    context = shared_context()
    kvstore, headers, bulk = _read_headers(item, names, use_ocdbt=use_ocdbt, use_zarr3=use_zarr3)
    small = _open_small(item, kvstore, {n: headers[n] for n in bulk}) if use_ocdbt and kvstore else {}
    opening = {name: ts.open(open_spec(item, name, use_ocdbt=use_ocdbt, use_zarr3=use_zarr3,
                                       has_every_chunk=has_every_chunk),
                             open=True, read=True, context=context)
               for name in names if name not in small}
    opened = []
    for name in names:
        if name in small:
            opened.append(small[name])
            continue
        store = _result(opening[name], "open", item, name)
        opened.append(StoredArray(
            param_name=name, shape=tuple(store.shape), dtype=np.dtype(store.dtype.numpy_dtype),
            chunk_shape=tuple(store.chunk_layout.read_chunk.shape or ()), store=store))
    return opened


# The zarr metadata of a real array is under 2 KiB. A larger or deeply nested header is
# damaged or hostile and must never reach TensorStore's parser (deep nesting crashes it).
MAX_HEADER_BYTES = 1024 * 1024


def read_array_headers(item: Location, names: Sequence[str], *, use_ocdbt: bool,
                       use_zarr3: bool) -> dict[str, dict[str, Any]]:
    """Each array's zarr metadata, bounds-checked; absent or unreadable ones are left out.

    Raises CorruptCheckpointError for a header that is too large, too deep or not JSON.
    """
    return _read_headers(item, names, use_ocdbt=use_ocdbt, use_zarr3=use_zarr3)[1]


def _read_headers(item: Location, names: Sequence[str], *, use_ocdbt: bool,
                  use_zarr3: bool) -> tuple[ts.KvStore | None, dict[str, dict[str, Any]], set[str]]:
    """The store, each array's header, and the names of arrays `_open_small` can read raw."""
    if not names:
        return None, {}, set()
    spec = item_database_spec(item) if use_ocdbt else item.kvstore_spec()
    header = ZARR3_HEADER if use_zarr3 else ZARR2_HEADER
    try:
        store = ts.KvStore.open(spec, context=shared_context()).result()
    except Exception:  # reported with context by the regular path
        return None, {}, set()
    batch = ts.Batch()  # lets OCDBT coalesce the B-tree lookups of every key
    reads = [store.read(_key(name, header), batch=batch) for name in names]
    batch.submit()
    headers: dict[str, dict[str, Any]] = {}
    bulk: set[str] = set()
    for name, future in zip(names, reads, strict=True):
        try:
            result = future.result()
        except Exception:  # a damaged database: the regular path reports it precisely
            continue
        if result.state == "value":
            raw = bytes(result.value)
            known = small_arrays.recognize_header(raw) if use_zarr3 else None
            if known is not None:
                headers[name] = known[0]
                if known[1]:
                    bulk.add(name)
                continue
            headers[name] = parse_json(
                raw, max_bytes=MAX_HEADER_BYTES,
                where=f"The zarr metadata {header!r} of parameter {name!r} of item {item}")
            if use_zarr3 and small_arrays.is_bulk_readable(headers[name]):
                bulk.add(name)
    return store, headers, bulk


def _open_small(item: Location, store: ts.KvStore,
                found: dict[str, dict[str, Any]]) -> dict[str, StoredArray]:
    """Raw-reads the chunks of the small arrays whose headers are `found`."""
    batch = ts.Batch()
    chunks = {name: store.read(_key(name, small_arrays.chunk_key(tuple(m['shape']))), batch=batch)
              for name, m in found.items() if math.prod(m["shape"]) > 0}
    batch.submit()
    opened = {}
    for name, metadata in found.items():
        shape = tuple(metadata["shape"])
        chunk = None
        if name in chunks:
            result = _result(chunks[name], "read", item, name)
            if result.state != "value":
                raise CorruptCheckpointError(
                    f"Expected the data of parameter {name!r} in item {item}, found it missing. "
                    "The checkpoint is incomplete or damaged; restore an earlier checkpoint.")
            chunk = bytes(result.value)
        opened[name] = StoredArray(param_name=name, shape=shape,
                                   dtype=np.dtype(metadata["data_type"]),
                                   chunk_shape=tuple(max(1, d) for d in shape), chunk=chunk)
    return opened


# XLA's CPU client adopts host buffers aligned to 64 bytes without copying them.
BUFFER_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a BUFFER_ALIGNMENT boundary."""
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + BUFFER_ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % BUFFER_ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def _decode_small(item: Location, arrays: Sequence[StoredArray]) -> dict[str, np.ndarray]:
    """Verifies and decodes small arrays, one TensorStore read per dtype and size."""
    decoded = {a.param_name: np.zeros(a.shape, a.dtype) for a in arrays if a.chunk is None}
    present = [(a, a.chunk) for a in arrays if a.chunk is not None]
    groups = small_arrays.group_by_layout([(a, a.dtype, math.prod(a.shape)) for a, _ in present])
    for (dtype, length), stored in groups.items():
        try:
            rows = small_arrays.decode_chunks(dtype, length, [a.chunk for a in stored])
        except Exception:
            # Find which array is damaged, so the error can name it.
            for array in stored:
                try:
                    small_arrays.decode_chunks(dtype, length, [array.chunk])
                except Exception as error:
                    raise tensorstore_error(error, action="read", item=item,
                                            where=f"parameter {array.param_name!r} of item {item}") from error
            raise
        for array, row in zip(stored, rows, strict=True):
            decoded[array.param_name] = row.reshape(array.shape)
    return decoded


def read_arrays(item: Location, arrays: Sequence[StoredArray], reads: Sequence[ArrayRead], *,
                consume: Callable[[int, list[np.ndarray]], Any] | None = None,
                read_ahead_bytes: int | None = None,
                min_in_flight: int | None = None) -> list[Any]:
    """Reads every region of every request concurrently into new aligned host buffers.

    Reading straight into 64-byte aligned buffers lets `jax.device_put` on CPU adopt
    them, so a restore holds each byte once instead of twice. With `consume`, each
    request's buffers go to `consume(index, buffers)` in request order as soon as they are
    read, while later reads go on, and its result takes their place: a caller that copies
    them to an accelerator overlaps that copy with the reads and lets the buffers go.
    `read_ahead_bytes` bounds the reads in flight and `min_in_flight` requests stay in
    flight whatever their size (None: `item.options`' read bound into host memory and
    its `min_requests_in_flight`).
    """
    require_positive_int(min_in_flight, what="read_arrays(min_in_flight=...)", allow_none=True,
                         fix="pass e.g. 4, or leave the default")
    read_ahead = (item.options.read_bound(to_accelerator=False) if read_ahead_bytes is None
                  else read_ahead_bytes)
    min_requests = min_in_flight or item.options.min_requests
    small = _decode_small(item, [a for a in arrays if a.store is None])
    pending: list[list[tuple[np.ndarray, Any]]] = []
    remaining: list[int] = []  # reads of each request not yet waited on
    in_flight: collections.deque[tuple[int, int, Any]] = collections.deque()
    results: list[Any] = []
    held = issued = peak = 0  # issued: requests whose reads have all been started

    def hand_over_finished() -> None:
        # In request order, every issued request whose reads have all finished.
        while len(results) < issued and remaining[len(results)] == 0:
            done = len(results)
            buffers = [buffer for buffer, _ in pending[done]]
            pending[done] = []
            results.append(consume(done, buffers) if consume is not None else buffers)

    def wait_oldest() -> None:
        nonlocal held
        index, size, future = in_flight.popleft()
        _result(future, "read", item, reads[index].param_name)
        held -= size
        remaining[index] -= 1
        hand_over_finished()

    for array, request in zip(arrays, reads, strict=True):
        dtype = np.dtype(request.dtype if request.dtype is not None else array.dtype)
        requests: list[tuple[np.ndarray, Any]] = []
        pending.append(requests)
        remaining.append(0)
        if array.store is None:
            # Small: copying into the device costs less than aligning first.
            decoded = small[array.param_name]
            requests.extend((np.asarray(decoded[index], dtype=dtype), None) for index in request.regions)
            issued += 1
            continue
        view = array.store if dtype == array.dtype else ts.cast(array.store, dtype)
        for index in request.regions:
            region = view[index]
            buffer = aligned_empty(tuple(region.shape), dtype)
            # Stored bytes wait in TensorStore until decoded: bound them to keep memory flat.
            while (len(in_flight) >= min_requests
                   and held + buffer.nbytes > read_ahead):
                wait_oldest()
            future = ts.array(buffer, copy=False, write=True).write(region)
            in_flight.append((len(pending) - 1, buffer.nbytes, future))
            held += buffer.nbytes
            peak = max(peak, held)
            remaining[-1] += 1
            requests.append((buffer, future))
        issued += 1
    while in_flight:
        wait_oldest()
    hand_over_finished()  # requests after the last read that needed none
    logger.debug("Read %d arrays from %s, at most %d bytes in flight.", len(reads), item, peak)
    return results


# TensorStore status codes that describe the environment rather than the stored bytes.
_ENVIRONMENT_CODES = ("PERMISSION_DENIED", "UNAUTHENTICATED", "UNAVAILABLE", "DEADLINE_EXCEEDED",
                      "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED")
_SPEC_SUFFIX = re.compile(r"\s*\[tensorstore_spec=.*\]\s*$", re.DOTALL)


def tensorstore_error(error: BaseException, *, action: str, where: str, item: Location,
                      nbytes: int | None = None) -> CheckpointError:
    """Turns a TensorStore failure into StorageError (environment) or CorruptCheckpointError.

    Reads and opens take everything they know from the stored files, so a failure that
    is not about the environment (permissions, network, space) means damaged files:
    checksum mismatches, undecodable OCDBT manifests or B-tree nodes, truncated data
    files, invalid zarr metadata, missing chunks.
    """
    text = _SPEC_SUFFIX.sub("", str(error))
    if "No space left" in text or "os_error_code='28'" in text or "Disk quota" in text:
        return StorageError(f"Could not {action} {where}: the disk is full ({text}). "
                            f"{_space_hint(item, nbytes)}Free space there (or save elsewhere) "
                            "and retry.")
    is_environment = any(code in text for code in _ENVIRONMENT_CODES)
    if action in ("open", "read") and not is_environment:
        if "NOT_FOUND" in text or "not found" in text.lower() or "is missing" in text:
            return CorruptCheckpointError(
                f"Expected stored array {where}, found it incomplete ({text}). The checkpoint "
                "is incomplete or damaged; restore an earlier checkpoint."
            )
        return CorruptCheckpointError(
            f"Could not {action} {where}: {text}. The stored data or its metadata is corrupt; "
            "restore an earlier checkpoint."
        )
    return StorageError(f"Could not {action} {where}: {text}")


def _space_hint(item: Location, nbytes: int | None) -> str:
    parts = []
    if nbytes:
        parts.append(f"This process writes {nbytes / 2**20:.1f} MiB of array data there")
    if item.is_local:
        folder = item.path
        while folder and not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        try:
            stats = os.statvfs(folder or "/")
            parts.append(f"{stats.f_bavail * stats.f_frsize / 2**20:.1f} MiB are free at {folder}")
        except OSError:
            pass
    return "; ".join(parts) + ". " if parts else ""


def _result(future: Any, action: str, item: Location, param_name: str,
            nbytes: int | None = None) -> Any:
    try:
        return future.result()
    except Exception as error:
        raise tensorstore_error(error, action=action, item=item, nbytes=nbytes,
                                where=f"parameter {param_name!r} of item {item}") from error
