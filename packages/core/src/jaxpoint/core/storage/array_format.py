"""TensorStore specs for arrays: zarr3 (or legacy zarr2) inside OCDBT, as orbax lays them out.

Each process writes into its own OCDBT database `<item>/ocdbt.process_<i>/`; the primary
later merges them into `<item>/manifest.ocdbt` (see `ocdbt_merge`). Chunks carry a
crc32c checksum from zarr3's own codec, so a flipped byte fails the read.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from jaxpoint.core.storage.location import Location

PROCESS_DB_PREFIX = "ocdbt.process_"
OCDBT_MANIFEST = "manifest.ocdbt"
ZARR3_HEADER = "zarr.json"
ZARR2_HEADER = ".zarray"
OCDBT_CONFIG = {
    "max_inline_value_bytes": 1024,
    "max_decoded_node_bytes": 100_000_000,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArrayFormat:
    """How arrays are encoded. `compression` is None or "zstd" (level `zstd_level`)."""

    use_ocdbt: bool = True
    use_zarr3: bool = True
    compression: str | None = None
    zstd_level: int = 1
    # None: the location's StorageOptions.target_data_file_size.
    target_data_file_size: int | None = None


def process_database_spec(item: Location, process_index: int, *,
                          target_data_file_size: int | None = None) -> dict[str, Any]:
    """OCDBT kvstore spec of one process's database under `item`; new data files roll over
    near `target_data_file_size` bytes (None: `item.options`' size)."""
    base = item / f"{PROCESS_DB_PREFIX}{process_index}"
    file_bytes = target_data_file_size
    if file_bytes is None:
        file_bytes = item.options.data_file_bytes(is_local=item.is_local)
    return {
        "driver": "ocdbt",
        "base": base.kvstore_spec(),
        "config": dict(OCDBT_CONFIG),
        "target_data_file_size": file_bytes,
    }


def item_database_spec(item: Location) -> dict[str, Any]:
    """OCDBT kvstore spec of the merged database of `item` (readers use this one)."""
    return {"driver": "ocdbt", "base": item.kvstore_spec()}


def array_kvstore_spec(item: Location, param_name: str, *, use_ocdbt: bool,
                       database: dict[str, Any] | None = None) -> dict[str, Any]:
    """Kvstore spec of one parameter's folder, inside OCDBT or as a plain folder."""
    if not use_ocdbt:
        return (item / param_name).kvstore_spec()
    spec = dict(database if database is not None else item_database_spec(item))
    spec["path"] = f"{param_name}/"
    return spec


# Default chunk size for large shards. A chunk is encoded and decoded by one thread, so
# whole-shard chunks leave cores idle on restore; measured on a 16-core host (H200 run in
# docs/performance.md), 8 MiB chunks restored 4 GiB from the page cache 1.6x faster.
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024


def chunk_shape_for(write_shape: tuple[int, ...], itemsize: int,
                    chunk_byte_size: int | None) -> tuple[int, ...]:
    """The chunk shape of a shard: `chunk_byte_size` splits the largest dimensions until a
    chunk fits; by default a shard is split along its leading axes only, into chunks of
    at most DEFAULT_CHUNK_BYTES that are contiguous in memory."""
    chunk = [max(1, d) for d in write_shape]
    if chunk_byte_size is None:
        return contiguous_chunk_shape(tuple(chunk), itemsize, DEFAULT_CHUNK_BYTES)
    while math.prod(chunk) * itemsize > chunk_byte_size and max(chunk) > 1:
        axis = int(np.argmax(chunk))
        chunk[axis] = (chunk[axis] + 1) // 2
    return tuple(chunk)


def contiguous_chunk_shape(shape: tuple[int, ...], itemsize: int, limit: int) -> tuple[int, ...]:
    """Splits leading axes, outermost first, until a chunk holds at most `limit` bytes."""
    chunk = list(shape)
    for axis in range(len(chunk)):
        inner = math.prod(chunk[axis + 1:]) * itemsize
        if inner * chunk[axis] <= limit:
            break
        chunk[axis] = max(1, limit // inner) if inner else chunk[axis]
        if inner <= limit:
            break
    return tuple(chunk)


def zarr3_metadata(shape: tuple[int, ...], dtype: np.dtype, chunk_shape: tuple[int, ...],
                   fmt: ArrayFormat) -> dict[str, Any]:
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if fmt.compression == "zstd":
        codecs.append({"name": "zstd", "configuration": {"level": fmt.zstd_level}})
    codecs.append({"name": "crc32c"})
    return {
        "shape": list(shape),
        "data_type": np.dtype(dtype).name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk_shape)}},
        "chunk_key_encoding": {"name": "default"},
        "codecs": codecs,
    }


def zarr2_metadata(shape: tuple[int, ...], dtype: np.dtype, chunk_shape: tuple[int, ...],
                   fmt: ArrayFormat) -> dict[str, Any]:
    compressor = {"id": "zstd", "level": fmt.zstd_level} if fmt.compression == "zstd" else None
    return {"shape": list(shape), "chunks": list(chunk_shape), "compressor": compressor,
            "dtype": _zarr2_dtype(np.dtype(dtype))}


def _zarr2_dtype(dtype: np.dtype) -> str:
    return "bfloat16" if dtype.name == "bfloat16" else dtype.str


def create_spec(item: Location, param_name: str, *, database: dict[str, Any] | None,
                shape: tuple[int, ...], dtype: np.dtype, chunk_shape: tuple[int, ...],
                fmt: ArrayFormat) -> dict[str, Any]:
    """Spec that creates one array for writing."""
    kvstore = array_kvstore_spec(item, param_name, use_ocdbt=fmt.use_ocdbt, database=database)
    if fmt.use_zarr3:
        driver, metadata = "zarr3", zarr3_metadata(shape, dtype, chunk_shape, fmt)
    else:
        driver, metadata = "zarr", zarr2_metadata(shape, dtype, chunk_shape, fmt)
    return {"driver": driver, "kvstore": kvstore, "metadata": metadata,
            "store_data_equal_to_fill_value": True}


def open_spec(item: Location, param_name: str, *, use_ocdbt: bool, use_zarr3: bool,
              has_every_chunk: bool = False) -> dict[str, Any]:
    """Spec that opens an existing array for reading; its metadata comes from the files.

    `has_every_chunk`: every chunk was written, so a missing one fails the read instead of
    silently reading as the fill value.
    """
    spec: dict[str, Any] = {"driver": "zarr3" if use_zarr3 else "zarr",
            "kvstore": array_kvstore_spec(item, param_name, use_ocdbt=use_ocdbt)}
    if has_every_chunk:
        spec["fill_missing_data_reads"] = False
    return spec
