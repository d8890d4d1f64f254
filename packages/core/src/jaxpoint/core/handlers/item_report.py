"""`ItemReport`: what a handler's `verify` checked in one item."""

from __future__ import annotations

import dataclasses


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


__all__ = ["ItemReport"]
