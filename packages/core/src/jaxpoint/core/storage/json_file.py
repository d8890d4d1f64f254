"""Reading metadata files as JSON only, with bounds, so hostile files fail fast."""

from __future__ import annotations

import json
import os
from typing import Any

from jaxpoint.core.errors import CheckpointNotFoundError, CorruptCheckpointError, StorageError
from jaxpoint.core.storage.location import Location
from jaxpoint.core.storage.posix_backend import storage_error

# `_METADATA` of a 100k-leaf tree is about 20 MiB; larger means corruption or attack.
MAX_METADATA_BYTES = 128 * 1024 * 1024
# Parsed JSON costs up to ~70 bytes per element (`[{},{},...]`): bounding the elements
# (a 100k-leaf tree has about 2 million) bounds the memory a hostile file can take.
MAX_ELEMENTS = 4_000_000
MAX_NESTING = 64


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of containers, level by level; stops once past `limit`."""
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > limit:
            return depth
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
            below.extend(child for child in children if isinstance(child, dict | list))
        level = below
    return depth


def _check_size(location: Location, size: int) -> None:
    if size > MAX_METADATA_BYTES:
        raise CorruptCheckpointError(
            f"Metadata file {location} is {size} bytes; expected at most "
            f"{MAX_METADATA_BYTES}. The file is corrupt."
        )


def read_json(location: Location, *, expect: type = dict) -> Any:
    """Parses the JSON file at `location`, checking size, nesting and the top-level type."""
    try:
        if location.is_local:
            # Refuse a huge file before reading it into memory.
            _check_size(location, os.stat(location.path).st_size)
        data = location.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise CheckpointNotFoundError(
            f"Expected a metadata file at {location}, found none. The checkpoint is "
            "incomplete or was written by another tool."
        ) from error
    except StorageError:
        raise
    except OSError as error:
        raise storage_error(error, "read", str(location)) from error
    return parse_json(data, where=f"Metadata file {location}", expect=expect)


def parse_json(data: bytes, *, where: str, expect: type = dict,
               max_bytes: int = MAX_METADATA_BYTES) -> Any:
    """Parses JSON bytes with the bounds of `read_json`; `where` starts every error message."""
    if len(data) > max_bytes:
        raise CorruptCheckpointError(
            f"{where} is {len(data)} bytes; expected at most {max_bytes}. It is corrupt.")
    elements = data.count(b",") + data.count(b"[") + data.count(b"{")
    if elements > MAX_ELEMENTS:
        raise CorruptCheckpointError(
            f"{where} holds about {elements} JSON values; expected at most "
            f"{MAX_ELEMENTS}. It is corrupt."
        )
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise CorruptCheckpointError(
            f"{where} is not valid JSON ({error}). It is corrupt or truncated; restore an "
            "earlier checkpoint."
        ) from error
    # Fewer opening brackets than the limit cannot nest past it: skip the walk.
    openings = data.count(b"[") + data.count(b"{")
    if openings > MAX_NESTING and _depth(value, MAX_NESTING) > MAX_NESTING:
        raise CorruptCheckpointError(f"{where} nests deeper than {MAX_NESTING} levels; it is corrupt.")
    if not isinstance(value, expect):
        raise CorruptCheckpointError(
            f"Expected {where} to hold a JSON {expect.__name__}, found "
            f"{type(value).__name__}. It is corrupt."
        )
    return value
