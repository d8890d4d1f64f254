"""Reading metadata files as JSON only, with bounds, so hostile files fail fast."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from jaxpoint.core.errors import CheckpointNotFoundError, CorruptCheckpointError
from jaxpoint.core.storage.location import Location

# `_METADATA` of a 100k-leaf tree is about 20 MiB; larger means corruption or attack.
MAX_METADATA_BYTES = 128 * 1024 * 1024
# Parsed JSON costs up to ~70 bytes per element (`[{},{},...]`): bounding the elements
# (a 100k-leaf tree has about 2 million) bounds the memory a hostile file can take.
MAX_ELEMENTS = 4_000_000
MAX_NESTING = 64


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _nesting(data: bytes) -> int:
    """Deepest container nesting of valid JSON text, from its brackets outside strings.

    A byte scan (regex and numpy, both in C) instead of a walk over the parsed value:
    metadata of large trees holds millions of values.
    """
    if b"\\" in data:
        codes = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    else:
        # No escapes: every quote opens or closes a string, so the bytes inside strings are
        # those after an odd number of quotes (a vectorised scan, much cheaper than the regex).
        codes = np.frombuffer(data, dtype=np.uint8)
        quotes = codes == ord('"')
        codes = np.where((np.cumsum(quotes, dtype=np.int64) & 1).astype(bool) | quotes, 0, codes)
    steps = np.zeros(codes.shape, dtype=np.int32)
    steps[(codes == ord("[")) | (codes == ord("{"))] = 1
    steps[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def _check_size(location: Location, size: int) -> None:
    if size > MAX_METADATA_BYTES:
        raise CorruptCheckpointError(
            f"Metadata file {location} is {size} bytes; expected at most "
            f"{MAX_METADATA_BYTES}. The file is corrupt."
        )


def read_json(location: Location, *, expect: type = dict) -> Any:
    """Parses the JSON file at `location`, checking size, nesting and the top-level type."""
    try:
        size = location.size()
        if size is not None:
            _check_size(location, size)  # refuse a huge file before reading it into memory
        data = location.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise CheckpointNotFoundError(
            f"Expected a metadata file at {location}, found none. The checkpoint is "
            "incomplete or was written by another tool."
        ) from error
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
    if openings > MAX_NESTING and _nesting(data) > MAX_NESTING:
        raise CorruptCheckpointError(f"{where} nests deeper than {MAX_NESTING} levels; it is corrupt.")
    if not isinstance(value, expect):
        raise CorruptCheckpointError(
            f"Expected {where} to hold a JSON {expect.__name__}, found "
            f"{type(value).__name__}. It is corrupt."
        )
    return value
