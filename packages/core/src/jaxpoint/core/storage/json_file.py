"""Reading metadata files as JSON only, with bounds, so hostile files fail fast."""

from __future__ import annotations

import json
from typing import Any

from jaxpoint.core.errors import CheckpointNotFoundError, CorruptCheckpointError
from jaxpoint.core.storage.location import Location

# Metadata of even a 100k-leaf tree stays far below this; larger means corruption or attack.
MAX_METADATA_BYTES = 512 * 1024 * 1024
MAX_NESTING = 64


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def read_json(location: Location, *, expect: type = dict) -> Any:
    """Parses the JSON file at `location`, checking size, nesting and the top-level type."""
    try:
        data = location.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise CheckpointNotFoundError(
            f"Expected a metadata file at {location}, found none. The checkpoint is "
            "incomplete or was written by another tool."
        ) from error
    if len(data) > MAX_METADATA_BYTES:
        raise CorruptCheckpointError(
            f"Metadata file {location} is {len(data)} bytes; expected at most "
            f"{MAX_METADATA_BYTES}. The file is corrupt."
        )
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise CorruptCheckpointError(
            f"Metadata file {location} is not valid JSON ({error}). The file is corrupt or "
            "truncated; restore an earlier checkpoint."
        ) from error
    if _depth(value, MAX_NESTING) > MAX_NESTING:
        raise CorruptCheckpointError(
            f"Metadata file {location} nests deeper than {MAX_NESTING} levels; the file is corrupt."
        )
    if not isinstance(value, expect):
        raise CorruptCheckpointError(
            f"Expected metadata file {location} to hold a JSON {expect.__name__}, found "
            f"{type(value).__name__}. The file is corrupt."
        )
    return value
