"""Bulk path for small arrays: cost per byte, not per leaf.

Opening a zarr3 array through TensorStore costs about half a millisecond, which dominates
trees of thousands of small leaves. Small arrays of one dtype and size are therefore
encoded together through ONE in-memory zarr3 array whose chunks have exactly their
bytes (so TensorStore's own `bytes` + `crc32c` codecs produce each chunk), and the
encoded chunks plus each array's `zarr.json` go into OCDBT as plain key-value writes in
one transaction. Reading reverses it. The stored result is byte-for-byte what the zarr3
driver writes for a single-chunk array, so orbax and the regular path read it as usual.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorstore as ts
from jaxpoint.core.storage.array_format import ArrayFormat, zarr3_metadata

# Arrays up to this size take the bulk path; larger ones amortise their open anyway.
SMALL_ARRAY_BYTES = 256 * 1024
# Bound on the encoded bytes held in memory by one transaction.
TRANSACTION_BYTES = 64 * 1024 * 1024
_UNCOMPRESSED = ArrayFormat()


def is_small(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return math.prod(shape) * dtype.itemsize <= SMALL_ARRAY_BYTES


def chunk_key(shape: tuple[int, ...]) -> str:
    """Key of the only chunk of a single-chunk array (default zarr3 key encoding)."""
    return "/".join(["c", *("0" * len(shape))])


@functools.cache
def _metadata_template(dtype_name: str) -> dict[str, Any]:
    """The zarr.json TensorStore writes for this dtype, with the shape left to fill in."""
    context = ts.Context()
    store = ts.open({"driver": "zarr3", "kvstore": {"driver": "memory"},
                     "metadata": zarr3_metadata((1,), np.dtype(dtype_name), (1,), _UNCOMPRESSED)},
                    create=True, context=context).result()
    raw = ts.KvStore.open({"driver": "memory"}, context=context).result().read(b"zarr.json").result()
    del store
    return json.loads(raw.value)


def zarr_json(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    return _zarr_json(tuple(shape), np.dtype(dtype))


@functools.lru_cache(maxsize=4096)
def _zarr_json(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    metadata = dict(_metadata_template(dtype.name))
    metadata["shape"] = list(shape)
    metadata["chunk_grid"] = {"configuration": {"chunk_shape": [max(1, d) for d in shape]},
                              "name": "regular"}
    return json.dumps(metadata, separators=(",", ":"), sort_keys=True).encode()


_SHAPE = re.compile(rb'"shape":\[([0-9,]*)\]')
_DATA_TYPE = re.compile(rb'"data_type":"([A-Za-z0-9_]+)"')


def recognize_header(raw: bytes) -> tuple[dict[str, Any], bool] | None:
    """(metadata, whether `is_bulk_readable`) of a header this module wrote; else None.

    Thousands of small leaves mean thousands of headers, most of them identical: comparing
    each with the exact bytes `zarr_json` produces (cached per distinct header) is much
    cheaper than parsing and validating it.
    """
    known = _recognized(raw)
    return None if known is None else (dict(known[0]), known[1])


@functools.lru_cache(maxsize=4096)
def _recognized(raw: bytes) -> tuple[dict[str, Any], bool] | None:
    shape_match, type_match = _SHAPE.search(raw), _DATA_TYPE.search(raw)
    if shape_match is None or type_match is None:
        return None
    try:
        shape = tuple(int(d) for d in shape_match.group(1).split(b",") if d)
        dtype = np.dtype(type_match.group(1).decode())
        expected = zarr_json(shape, dtype)
    except (TypeError, ValueError):
        return None
    if raw != expected:
        return None
    metadata = json.loads(expected)
    return metadata, is_bulk_readable(metadata)


def is_bulk_readable(metadata: Any) -> bool:
    """True when a stored zarr.json describes a small single-chunk array in our codecs."""
    # The header comes from storage: check every type before using it (it may be hostile).
    try:
        shape = tuple(metadata["shape"])
        if not all(type(d) is int and d >= 0 for d in shape) or not isinstance(
                metadata["data_type"], str):
            return False
        dtype = np.dtype(metadata["data_type"])
        chunk = tuple(metadata["chunk_grid"]["configuration"]["chunk_shape"])
        codecs = [c["name"] for c in metadata["codecs"]]
        configuration = metadata["codecs"][0].get("configuration") or {}
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return False
    return (metadata.get("chunk_key_encoding") == {"name": "default"} and not dtype.hasobject
            and dtype.kind in "biufcV" and dtype.fields is None
            and chunk == tuple(max(1, d) for d in shape) and codecs == ["bytes", "crc32c"]
            and is_small(shape, dtype) and configuration in ({}, {"endian": "little"}))


def _template(context: ts.Context, dtype: np.dtype, count: int, length: int, *,
              create: bool) -> ts.TensorStore:
    spec = {"driver": "zarr3", "kvstore": {"driver": "memory"},
            "store_data_equal_to_fill_value": True}
    if create:
        spec["metadata"] = zarr3_metadata((count, length), dtype, (1, length), _UNCOMPRESSED)
        return ts.open(spec, create=True, context=context).result()
    return ts.open(spec, open=True, context=context).result()


def encode_chunks(dtype: np.dtype, arrays: Sequence[np.ndarray]) -> list[bytes]:
    """Encodes equally sized arrays of `dtype` into zarr3 chunks (bytes + crc32c)."""
    length = max(1, arrays[0].size)
    context = ts.Context()
    store = _template(context, dtype, len(arrays), length, create=True)
    stacked = np.stack([np.ascontiguousarray(a).reshape(length) for a in arrays])
    store.write(stacked).result()
    memory = ts.KvStore.open({"driver": "memory"}, context=context).result()
    reads = [memory.read(f"c/{i}/0".encode()) for i in range(len(arrays))]
    return [bytes(r.result().value) for r in reads]


def decode_chunks(dtype: np.dtype, length: int, chunks: Sequence[bytes]) -> np.ndarray:
    """Verifies and decodes chunks written by `encode_chunks`; rows are the arrays."""
    context = ts.Context()
    memory = ts.KvStore.open({"driver": "memory"}, context=context).result()
    metadata = zarr3_metadata((len(chunks), length), dtype, (1, length), _UNCOMPRESSED)
    header = ts.open({"driver": "zarr3", "kvstore": {"driver": "memory"}, "metadata": metadata},
                     create=True, context=context).result()
    del header
    writes = [memory.write(f"c/{i}/0".encode(), chunk) for i, chunk in enumerate(chunks)]
    for write in writes:
        write.result()
    return _template(context, dtype, len(chunks), length, create=False).read().result()


def group_by_layout(items: Sequence[tuple[Any, np.dtype, int]]) -> dict[tuple[np.dtype, int], list[Any]]:
    """Groups keys by (dtype, element count), from (key, dtype, size): one template per group."""
    groups: dict[tuple[np.dtype, int], list[Any]] = collections.defaultdict(list)
    for key, dtype, size in items:
        groups[(dtype, max(1, size))].append(key)
    return groups
